//! HPACK's index space (RFC 7541 §2.3): the static table (Appendix A) and the
//! dynamic table that mirrors the client's encoder.

use std::collections::VecDeque;

/// Appendix A: entries 1 to 61.
const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The static table's first index for `name`, if it holds that name.
pub(super) fn static_name(name: &[u8]) -> Option<usize> {
    Some(match name {
        b":authority" => 1,
        b":method" => 2,
        b":path" => 4,
        b":scheme" => 6,
        b":status" => 8,
        b"accept-charset" => 15,
        b"accept-encoding" => 16,
        b"accept-language" => 17,
        b"accept-ranges" => 18,
        b"accept" => 19,
        b"access-control-allow-origin" => 20,
        b"age" => 21,
        b"allow" => 22,
        b"authorization" => 23,
        b"cache-control" => 24,
        b"content-disposition" => 25,
        b"content-encoding" => 26,
        b"content-language" => 27,
        b"content-length" => 28,
        b"content-location" => 29,
        b"content-range" => 30,
        b"content-type" => 31,
        b"cookie" => 32,
        b"date" => 33,
        b"etag" => 34,
        b"expect" => 35,
        b"expires" => 36,
        b"from" => 37,
        b"host" => 38,
        b"if-match" => 39,
        b"if-modified-since" => 40,
        b"if-none-match" => 41,
        b"if-range" => 42,
        b"if-unmodified-since" => 43,
        b"last-modified" => 44,
        b"link" => 45,
        b"location" => 46,
        b"max-forwards" => 47,
        b"proxy-authenticate" => 48,
        b"proxy-authorization" => 49,
        b"range" => 50,
        b"referer" => 51,
        b"refresh" => 52,
        b"retry-after" => 53,
        b"server" => 54,
        b"set-cookie" => 55,
        b"strict-transport-security" => 56,
        b"transfer-encoding" => 57,
        b"user-agent" => 58,
        b"vary" => 59,
        b"via" => 60,
        b"www-authenticate" => 61,
        _ => return None,
    })
}

/// The static table's index for the pair `name: value`, if it holds it.
pub(super) fn static_field(name: &[u8], value: &[u8]) -> Option<usize> {
    // A name's entries are consecutive, starting at its first index.
    let first = static_name(name)?;
    let same_name = STATIC.get(first - 1..)?.iter().take_while(|(n, _)| n.as_bytes() == name);
    same_name.zip(first..).find(|((_, v), _)| v.as_bytes() == value).map(|(_, i)| i)
}

/// What an entry costs in the table (§4.1): its octets plus 32.
pub(super) fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

/// A name and value as the table holds them.
type Entry = (Box<[u8]>, Box<[u8]>);

/// The dynamic table (§2.3.2, §4): newest entry first, evicted oldest first.
#[derive(Debug, Default)]
pub(super) struct DynamicTable {
    entries: VecDeque<Entry>,
    /// Sum of [`entry_size`] over the entries.
    size: usize,
    /// The limit the encoder last set (at most the decoder's setting).
    max_size: usize,
}

impl DynamicTable {
    pub(super) fn new(max_size: usize) -> Self {
        Self { entries: VecDeque::new(), size: 0, max_size }
    }

    pub(super) fn size(&self) -> usize {
        self.size
    }

    /// How many entries it holds.
    pub(super) fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Applies a dynamic table size update (§4.3, §6.3); the caller has
    /// checked it against the decoder's setting.
    pub(super) fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
    }

    /// Adds an entry (§4.4). One larger than the whole table empties it and
    /// is not added.
    pub(super) fn insert(&mut self, name: Box<[u8]>, value: Box<[u8]>) {
        let size = entry_size(&name, &value);
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.entries.push_front((name, value));
        self.size += size;
    }

    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.entries.pop_back() {
                Some((n, v)) => self.size -= entry_size(&n, &v),
                None => self.size = 0,
            }
        }
    }

    /// The entry at `index` in the whole index space (1-based: static table
    /// first, then the dynamic table, newest first).
    pub(super) fn get(&self, index: usize) -> Option<(&[u8], &[u8])> {
        if let Some(&(n, v)) = index.checked_sub(1).and_then(|i| STATIC.get(i)) {
            return Some((n.as_bytes(), v.as_bytes()));
        }
        let (n, v) = self.entries.get(index.checked_sub(STATIC.len() + 1)?)?;
        Some((n, v))
    }

    /// The entries, newest first (for tests).
    #[cfg(test)]
    pub(super) fn entries(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries.iter().map(|(n, v)| (&n[..], &v[..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_space_starts_at_one_with_the_static_table() {
        let mut t = DynamicTable::new(4096);
        assert_eq!(t.get(0), None);
        assert_eq!(t.get(1), Some((&b":authority"[..], &b""[..])));
        assert_eq!(t.get(2), Some((&b":method"[..], &b"GET"[..])));
        assert_eq!(t.get(61), Some((&b"www-authenticate"[..], &b""[..])));
        assert_eq!(t.get(62), None);
        t.insert(b"a".to_vec().into(), b"1".to_vec().into());
        t.insert(b"b".to_vec().into(), b"2".to_vec().into());
        assert_eq!(t.get(62), Some((&b"b"[..], &b"2"[..])), "newest first");
        assert_eq!(t.get(63), Some((&b"a"[..], &b"1"[..])));
        assert_eq!(t.get(64), None);
        assert_eq!(t.size(), 2 * 34);
    }

    #[test]
    fn static_lookups_agree_with_the_table() {
        for (i, (name, value)) in STATIC.iter().enumerate() {
            let index = i + 1;
            let first = STATIC.iter().position(|(n, _)| n == name).unwrap() + 1;
            assert_eq!(static_name(name.as_bytes()), Some(first), "{name}");
            assert_eq!(static_field(name.as_bytes(), value.as_bytes()), Some(index), "{name}: {value}");
        }
        assert_eq!(static_name(b"workload.spiffe.io"), None);
        assert_eq!(static_field(b":method", b"PUT"), None);
        assert_eq!(static_field(b"content-type", b"application/grpc"), None);
    }

    #[test]
    fn eviction_keeps_the_table_within_its_size() {
        let mut t = DynamicTable::new(100);
        t.insert(b"aaaa".to_vec().into(), b"1111".to_vec().into()); // 40
        t.insert(b"bbbb".to_vec().into(), b"2222".to_vec().into()); // 80
        t.insert(b"cccc".to_vec().into(), b"3333".to_vec().into()); // evicts a
        assert_eq!(t.size(), 80);
        assert_eq!(t.entries().map(|(n, _)| n.to_vec()).collect::<Vec<_>>(), vec![b"cccc".to_vec(), b"bbbb".to_vec()]);
        // An entry larger than the table empties it.
        t.insert(vec![b'x'; 80].into(), Vec::new().into());
        assert_eq!((t.size(), t.entries().count()), (0, 0));
        t.insert(b"dddd".to_vec().into(), b"4444".to_vec().into());
        t.set_max_size(0);
        assert_eq!((t.size(), t.entries().count()), (0, 0));
    }
}
