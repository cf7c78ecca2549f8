//! SCIM filters and attribute paths (RFC 7644 §3.4.2.2 and §3.5.2): parsed
//! in full before anything is evaluated, bounded in length and nesting, and
//! evaluated against a resource as JSON.
//!
//! The text comes from the network (`?filter=`, a PATCH `path`), so the
//! parser never panics and never recurses deeper than [`MAX_DEPTH`]: a
//! filter of ten thousand parentheses is refused with `invalidFilter`, not a
//! stack overflow. Attribute names, operators and keywords are matched
//! without regard to letter case, as the RFC says; values compare without
//! regard to case unless the schema marks the attribute `caseExact`.

use std::cmp::Ordering;

use serde_json::Value;

/// Longest filter or path accepted, in bytes.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses, `not` and `[...]` accepted.
pub const MAX_DEPTH: usize = 16;

/// Why a filter or path was refused; the message names the place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at byte {at} of the filter")]
pub struct FilterError {
    /// What was wrong.
    pub message: String,
    /// Where, in bytes from the start.
    pub at: usize,
}

/// An attribute path: `[URN:]attr[.sub]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrPath {
    /// The schema URN it was qualified with, if any.
    pub urn: Option<String>,
    /// The attribute.
    pub attr: String,
    /// The sub-attribute, if any.
    pub sub: Option<String>,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal.
    Ne,
    /// Contains.
    Co,
    /// Starts with.
    Sw,
    /// Ends with.
    Ew,
    /// Greater than.
    Gt,
    /// Less than.
    Lt,
    /// Greater than or equal.
    Ge,
    /// Less than or equal.
    Le,
}

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Both.
    And(Box<Filter>, Box<Filter>),
    /// Either.
    Or(Box<Filter>, Box<Filter>),
    /// Not.
    Not(Box<Filter>),
    /// `attr pr`: present (not null, not empty).
    Present(AttrPath),
    /// `attr op value`.
    Compare(AttrPath, Op, Value),
    /// `attr[filter]`: some value of a multi-valued complex attribute
    /// matches `filter` (whose paths name its sub-attributes).
    ValuePath(AttrPath, Box<Filter>),
}

/// A PATCH operation's `path`.
#[derive(Debug, Clone, PartialEq)]
pub enum PatchPath {
    /// `attr` or `attr.sub`.
    Attr(AttrPath),
    /// `attr[filter]` or `attr[filter].sub`.
    Values {
        /// The multi-valued attribute.
        attr: AttrPath,
        /// Which of its values.
        filter: Filter,
        /// A sub-attribute of those values.
        sub: Option<String>,
    },
}

/// Parses a filter.
pub fn parse(text: &str) -> Result<Filter, FilterError> {
    let mut p = Parser::new(text)?;
    let f = p.or_expr(0)?;
    p.skip_ws();
    p.end()?;
    Ok(f)
}

/// Parses a PATCH path.
pub fn parse_path(text: &str) -> Result<PatchPath, FilterError> {
    let mut p = Parser::new(text)?;
    p.skip_ws();
    let attr = p.attr_path()?;
    let path = if p.eat("[") {
        if attr.sub.is_some() {
            return Err(p.error("a value filter follows an attribute, not a sub-attribute"));
        }
        let filter = p.or_expr(1)?;
        p.skip_ws();
        if !p.eat("]") {
            return Err(p.error("expected `]`"));
        }
        let sub = if p.eat(".") { Some(p.name()?) } else { None };
        PatchPath::Values { attr, filter, sub }
    } else {
        PatchPath::Attr(attr)
    };
    p.skip_ws();
    p.end()?;
    Ok(path)
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Result<Self, FilterError> {
        if text.len() > MAX_LEN {
            return Err(FilterError { message: format!("longer than {MAX_LEN} bytes"), at: MAX_LEN });
        }
        Ok(Self { text, pos: 0 })
    }

    fn rest(&self) -> &'a str {
        self.text.get(self.pos..).unwrap_or_default()
    }

    fn error(&self, message: impl Into<String>) -> FilterError {
        FilterError { message: message.into(), at: self.pos }
    }

    fn end(&self) -> Result<(), FilterError> {
        match self.rest().chars().next() {
            None => Ok(()),
            Some(c) => Err(self.error(format!("unexpected `{c}`"))),
        }
    }

    fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start_matches(' ');
        self.pos = self.text.len() - trimmed.len();
    }

    /// Consumes `s` (ASCII, any letter case) if it comes next.
    fn eat(&mut self, s: &str) -> bool {
        let rest = self.rest();
        match rest.get(..s.len()) {
            Some(head) if head.eq_ignore_ascii_case(s) => {
                self.pos += s.len();
                true
            }
            _ => false,
        }
    }

    /// Consumes keyword `word` when it comes next as a whole word
    /// followed by a space or `(`.
    fn keyword(&mut self, word: &str) -> bool {
        let rest = self.rest();
        let whole = rest.get(..word.len()).is_some_and(|h| h.eq_ignore_ascii_case(word))
            && rest.get(word.len()..).is_some_and(|after| after.starts_with(' ') || after.starts_with('('));
        if whole {
            self.pos += word.len();
        }
        whole
    }

    fn or_expr(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let mut left = self.and_expr(depth)?;
        loop {
            let save = self.pos;
            self.skip_ws();
            if self.pos > save && self.keyword("or") {
                self.skip_ws();
                let right = self.and_expr(depth)?;
                left = Filter::Or(Box::new(left), Box::new(right));
            } else {
                self.pos = save;
                return Ok(left);
            }
        }
    }

    fn and_expr(&mut self, depth: usize) -> Result<Filter, FilterError> {
        let mut left = self.factor(depth)?;
        loop {
            let save = self.pos;
            self.skip_ws();
            if self.pos > save && self.keyword("and") {
                self.skip_ws();
                let right = self.factor(depth)?;
                left = Filter::And(Box::new(left), Box::new(right));
            } else {
                self.pos = save;
                return Ok(left);
            }
        }
    }

    fn nested(&self, depth: usize) -> Result<usize, FilterError> {
        if depth >= MAX_DEPTH {
            return Err(self.error(format!("nested deeper than {MAX_DEPTH}")));
        }
        Ok(depth + 1)
    }

    fn factor(&mut self, depth: usize) -> Result<Filter, FilterError> {
        self.skip_ws();
        if self.keyword("not") {
            let depth = self.nested(depth)?;
            self.skip_ws();
            if !self.eat("(") {
                return Err(self.error("expected `(` after `not`"));
            }
            let inner = self.or_expr(depth)?;
            self.skip_ws();
            if !self.eat(")") {
                return Err(self.error("expected `)`"));
            }
            return Ok(Filter::Not(Box::new(inner)));
        }
        if self.eat("(") {
            let depth = self.nested(depth)?;
            let inner = self.or_expr(depth)?;
            self.skip_ws();
            if !self.eat(")") {
                return Err(self.error("expected `)`"));
            }
            return Ok(inner);
        }
        let path = self.attr_path()?;
        if self.eat("[") {
            if path.sub.is_some() {
                return Err(self.error("a value filter follows an attribute, not a sub-attribute"));
            }
            let depth = self.nested(depth)?;
            let inner = self.or_expr(depth)?;
            self.skip_ws();
            if !self.eat("]") {
                return Err(self.error("expected `]`"));
            }
            return Ok(Filter::ValuePath(path, Box::new(inner)));
        }
        let before = self.pos;
        self.skip_ws();
        if self.pos == before {
            return Err(self.error("expected a space and an operator after the attribute"));
        }
        let at = self.pos;
        let word: String = self.rest().chars().take_while(char::is_ascii_alphabetic).collect();
        self.pos += word.len();
        let op = match word.to_ascii_lowercase().as_str() {
            "pr" => return Ok(Filter::Present(path)),
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "co" => Op::Co,
            "sw" => Op::Sw,
            "ew" => Op::Ew,
            "gt" => Op::Gt,
            "lt" => Op::Lt,
            "ge" => Op::Ge,
            "le" => Op::Le,
            _ => return Err(FilterError { message: format!("unknown operator `{word}`"), at }),
        };
        if !self.eat(" ") {
            return Err(self.error("expected a space and a value after the operator"));
        }
        self.skip_ws();
        let value = self.value()?;
        Ok(Filter::Compare(path, op, value))
    }

    /// An attribute name: a letter, then letters, digits, `-` and `_`
    /// (`$ref` too).
    fn name(&mut self) -> Result<String, FilterError> {
        let rest = self.rest();
        let len = if rest.starts_with("$ref") {
            4
        } else {
            let mut chars = rest.char_indices();
            match chars.next() {
                Some((_, c)) if c.is_ascii_alphabetic() => {}
                _ => return Err(self.error("expected an attribute name")),
            }
            chars.find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')).map_or(rest.len(), |(i, _)| i)
        };
        let name = rest.get(..len).unwrap_or_default().to_owned();
        self.pos += len;
        Ok(name)
    }

    fn attr_path(&mut self) -> Result<AttrPath, FilterError> {
        let mut urn = None;
        if self.rest().get(..4).is_some_and(|h| h.eq_ignore_ascii_case("urn:")) {
            // The URN runs to the last `:` before the attribute; URNs hold
            // dots (`2.0`), so the split is at the colon, not the dot.
            let token_len = self
                .rest()
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '.' | '-' | '_' | '$')))
                .unwrap_or(self.rest().len());
            let token = self.rest().get(..token_len).unwrap_or_default();
            let Some(colon) = token.rfind(':') else { return Err(self.error("expected an attribute after the URN")) };
            urn = Some(token.get(..colon).unwrap_or_default().to_owned());
            self.pos += colon + 1;
        }
        let attr = self.name()?;
        let sub = if self.rest().starts_with('.') {
            self.pos += 1;
            Some(self.name()?)
        } else {
            None
        };
        Ok(AttrPath { urn, attr, sub })
    }

    fn value(&mut self) -> Result<Value, FilterError> {
        let rest = self.rest();
        let len = if rest.starts_with('"') {
            // To the closing quote, skipping escaped characters; the JSON
            // parser then reads the escapes.
            let mut escaped = false;
            let mut end = None;
            for (i, c) in rest.char_indices().skip(1) {
                match (escaped, c) {
                    (true, _) => escaped = false,
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        end = Some(i + 1);
                        break;
                    }
                    _ => {}
                }
            }
            end.ok_or_else(|| self.error("unterminated string"))?
        } else {
            rest.find([' ', ')', ']']).unwrap_or(rest.len())
        };
        let token = rest.get(..len).unwrap_or_default();
        let lower = token.to_ascii_lowercase();
        let value = match lower.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            _ => match serde_json::from_str::<Value>(token) {
                Ok(v @ (Value::String(_) | Value::Number(_))) => v,
                _ => return Err(self.error(format!("`{token}` is not a string, number, true, false or null"))),
            },
        };
        self.pos += len;
        Ok(value)
    }
}

/// Whether an attribute's values compare with regard to letter case.
pub type CaseExact<'a> = &'a dyn Fn(&str, Option<&str>) -> bool;

/// The value of `key` in object `v`, its name matched regardless of case.
pub fn field<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

/// The values path `p` designates in `resource`: each value of a
/// multi-valued attribute on its own, and for a complex value with no
/// sub-attribute named, its `value` (RFC 7644 §3.4.2.2).
fn values<'v>(resource: &'v Value, p: &AttrPath) -> Vec<&'v Value> {
    let Some(top) = field(resource, &p.attr) else { return Vec::new() };
    let items: Vec<&Value> = match top {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    items
        .into_iter()
        .filter_map(|item| match (&p.sub, item) {
            (Some(sub), v) => field(v, sub),
            (None, v @ Value::Object(_)) => field(v, "value"),
            (None, v) => Some(v),
        })
        .collect()
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

fn compare(have: &Value, op: Op, want: &Value, exact: bool) -> bool {
    let ordering = match (have, want) {
        (Value::String(h), Value::String(w)) => {
            let (h, w) = if exact { (h.clone(), w.clone()) } else { (h.to_lowercase(), w.to_lowercase()) };
            match op {
                Op::Co => return h.contains(&w),
                Op::Sw => return h.starts_with(&w),
                Op::Ew => return h.ends_with(&w),
                _ => h.cmp(&w),
            }
        }
        (Value::Number(h), Value::Number(w)) => match (h.as_f64(), w.as_f64()) {
            (Some(h), Some(w)) => h.partial_cmp(&w).unwrap_or(Ordering::Less),
            _ => return false,
        },
        (Value::Bool(h), Value::Bool(w)) if matches!(op, Op::Eq | Op::Ne) => h.cmp(w),
        _ => return false,
    };
    match op {
        Op::Eq => ordering == Ordering::Equal,
        Op::Ne => ordering != Ordering::Equal,
        Op::Gt => ordering == Ordering::Greater,
        Op::Lt => ordering == Ordering::Less,
        Op::Ge => ordering != Ordering::Less,
        Op::Le => ordering != Ordering::Greater,
        Op::Co | Op::Sw | Op::Ew => false,
    }
}

impl Filter {
    /// Whether `resource` (a JSON object) matches. `exact` tells, for an
    /// attribute and sub-attribute, whether values compare with regard to
    /// letter case.
    pub fn matches(&self, resource: &Value, exact: CaseExact<'_>) -> bool {
        match self {
            Self::And(a, b) => a.matches(resource, exact) && b.matches(resource, exact),
            Self::Or(a, b) => a.matches(resource, exact) || b.matches(resource, exact),
            Self::Not(f) => !f.matches(resource, exact),
            Self::Present(p) => values(resource, p).into_iter().any(present),
            // `eq null` asks for absence, `ne` is the negation of `eq`.
            Self::Compare(p, Op::Eq, Value::Null) => !values(resource, p).into_iter().any(present),
            Self::Compare(p, Op::Ne, want) => !Self::Compare(p.clone(), Op::Eq, want.clone()).matches(resource, exact),
            Self::Compare(p, op, want) => {
                let case = exact(&p.attr, p.sub.as_deref());
                values(resource, p).into_iter().any(|have| compare(have, *op, want, case))
            }
            Self::ValuePath(p, inner) => {
                let items: Vec<&Value> = match field(resource, &p.attr) {
                    Some(Value::Array(a)) => a.iter().collect(),
                    Some(v) => vec![v],
                    None => Vec::new(),
                };
                let attr = p.attr.as_str();
                let within = move |sub: &str, _: Option<&str>| exact(attr, Some(sub));
                items.into_iter().any(|item| inner.matches(item, &within))
            }
        }
    }

    /// `Some((attribute, value))` when the filter is exactly `attr eq
    /// "value"` on a top-level attribute: a lookup the datastore can
    /// answer by index.
    pub fn equality(&self) -> Option<(&str, &str)> {
        match self {
            Self::Compare(AttrPath { attr, sub: None, .. }, Op::Eq, Value::String(v)) => Some((attr, v)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn insensitive(attr: &str, _: Option<&str>) -> bool {
        attr.eq_ignore_ascii_case("id") || attr.eq_ignore_ascii_case("externalId")
    }

    fn m(filter: &str, resource: &Value) -> bool {
        parse(filter).unwrap_or_else(|e| panic!("{filter}: {e}")).matches(resource, &insensitive)
    }

    #[test]
    fn operators_and_precedence() {
        let r = json!({
            "id": "AbC", "userName": "Alice", "active": true, "externalId": "X1",
            "emails": [{"value": "alice@Example.org", "type": "work"}, {"value": "a@home.test", "type": "home"}],
            "name": {"givenName": "Alice"}, "meta": {"lastModified": "2026-01-02T00:00:00Z"}
        });
        assert!(m(r#"userName eq "alice""#, &r), "userName is not case-exact");
        assert!(!m(r#"id eq "abc""#, &r) && m(r#"id eq "AbC""#, &r), "id is");
        assert!(m(r#"emails.value co "EXAMPLE""#, &r) && m(r#"emails co "home.test""#, &r));
        assert!(m(r#"userName sw "al" and active eq true"#, &r));
        assert!(m(r#"userName eq "bob" or name.givenName ew "ice""#, &r));
        assert!(m(r#"emails[type eq "work" and value ew ".org"]"#, &r));
        assert!(!m(r#"emails[type eq "other"]"#, &r));
        assert!(m(r#"not (userName eq "bob") and externalId pr"#, &r));
        assert!(!m(r#"displayName pr"#, &r) && m(r#"displayName eq null"#, &r));
        assert!(m(r#"meta.lastModified gt "2025-12-31T00:00:00Z""#, &r));
        assert!(m(r#"urn:ietf:params:scim:schemas:core:2.0:User:userName EQ "ALICE""#, &r));
        // `and` binds tighter than `or`.
        assert!(m(r#"userName eq "x" and active eq true or externalId eq "X1""#, &r));
        assert!(!m(r#"userName eq "x" and (active eq true or externalId eq "X1")"#, &r));
        assert!(m(r#"userName ne "bob""#, &r) && !m(r#"active eq false"#, &r));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            "",
            "userName",
            "userName eq",
            "userName xx \"a\"",
            "userName eq \"a",
            "(userName eq \"a\"",
            "emails[type eq \"a\"",
            "userName eq \"a\" and",
            "userName eq bareword",
            "not userName eq \"a\"",
            "é eq \"a\"",
            "urn: eq 1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
        let deep = format!("{}userName pr{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&deep).is_err());
        let deep = format!("{}userName pr{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&deep).is_ok());
        assert!(parse(&"a".repeat(MAX_LEN + 1)).is_err());
    }

    #[test]
    fn patch_paths() {
        let p = parse_path(r#"members[value eq "2819c223"]"#).unwrap();
        assert!(matches!(p, PatchPath::Values { ref attr, sub: None, .. } if attr.attr == "members"));
        let p = parse_path(r#"emails[type eq "work"].value"#).unwrap();
        assert!(matches!(p, PatchPath::Values { sub: Some(ref s), .. } if s == "value"));
        let p = parse_path("urn:ietf:params:scim:schemas:core:2.0:User:name.givenName").unwrap();
        let PatchPath::Attr(a) = p else { panic!("{p:?}") };
        assert_eq!(
            (a.urn.as_deref(), a.attr.as_str(), a.sub.as_deref()),
            (Some("urn:ietf:params:scim:schemas:core:2.0:User"), "name", Some("givenName"))
        );
        assert!(parse_path("name.givenName[x eq 1]").is_err() && parse_path("a b").is_err());
    }
}
