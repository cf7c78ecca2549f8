//! Aligned text tables with a header row, for the list commands' human
//! output (`--json` prints the data as it came).

use hallmark_core::time::{rfc3339, rfc3339_relative};
use serde_json::Value;

/// Rows of cells under a header, printed with each column padded to its widest cell.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headings.
    pub fn new(header: &[&'static str]) -> Self {
        Self { header: header.to_vec(), rows: Vec::new() }
    }

    /// Adds a row (missing cells print empty; extra ones are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text: the header, then one line per row, the last column unpadded.
    pub fn render(&self) -> String {
        let n = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut out = String::new();
            for (i, w) in widths.iter().enumerate() {
                let c = cells.get(i).copied().unwrap_or("");
                if i + 1 == n {
                    out.push_str(c);
                } else {
                    out.push_str(&format!("{c:<w$}  "));
                }
            }
            out.trim_end().to_owned()
        };
        let mut out = line(self.header.clone());
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r.iter().map(String::as_str).collect()));
            out.push('\n');
        }
        out
    }

    /// Prints the table, or `empty` when it has no rows.
    pub fn print_or(&self, empty: &str) {
        if self.rows.is_empty() {
            println!("{empty}");
        } else {
            print!("{}", self.render());
        }
    }
}

/// A JSON field as text: strings as they are, numbers and booleans printed,
/// null and absent as empty.
pub fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A unix-seconds JSON field as RFC 3339, or empty.
pub fn time(v: &Value, key: &str) -> String {
    v[key].as_i64().map(rfc3339).unwrap_or_default()
}

/// A unix-seconds JSON field as RFC 3339 with the time from now, or empty.
pub fn time_rel(v: &Value, key: &str, now: i64) -> String {
    v[key].as_i64().map(|t| rfc3339_relative(t, now)).unwrap_or_default()
}

/// `v` with an RFC 3339 twin beside every instant it holds in unix seconds:
/// for each key `at`, `*_at`, `not_before` or `not_after` with an integer
/// value, `KEY_rfc3339`. Scripts keep the seconds; people can read the twin.
pub fn with_rfc3339(v: &Value) -> Value {
    match v {
        Value::Array(list) => Value::Array(list.iter().map(with_rfc3339).collect()),
        Value::Object(map) => {
            let mut out = serde_json::Map::with_capacity(map.len());
            for (k, x) in map {
                out.insert(k.clone(), with_rfc3339(x));
                let instant = k == "at" || k.ends_with("_at") || k == "not_before" || k == "not_after";
                if let Some(secs) = x.as_i64().filter(|s| instant && (0..=253_402_300_799).contains(s)) {
                    out.insert(format!("{k}_rfc3339"), Value::String(rfc3339(secs)));
                }
            }
            Value::Object(out)
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::Table;

    #[test]
    fn json_instants_get_an_rfc3339_twin() {
        let v = serde_json::json!({ "not_after": 0, "revoked_at": null, "x509_ttl": 60, "list": [{ "at": 86400 }] });
        let w = super::with_rfc3339(&v);
        assert_eq!(w["not_after_rfc3339"], "1970-01-01T00:00:00Z");
        assert_eq!(w["list"][0]["at_rfc3339"], "1970-01-02T00:00:00Z");
        assert!(w.get("revoked_at_rfc3339").is_none() && w.get("x509_ttl_rfc3339").is_none());
        assert_eq!(w["not_after"], 0, "the seconds stay");
    }

    #[test]
    fn columns_align_under_their_header() {
        let mut t = Table::new(&["ID", "NAME", "STATE"]);
        t.row(vec!["1".into(), "a-long-name".into(), "live".into()]);
        t.row(vec!["22".into(), "b".into()]);
        assert_eq!(t.render(), "ID  NAME         STATE\n1   a-long-name  live\n22  b\n");
    }
}
