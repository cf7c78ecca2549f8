//! SCIM PATCH (RFC 7644 §3.5.2): `add`, `replace` and `remove`, with and
//! without a `path`, applied in order to a resource as JSON. What comes out
//! is checked afterwards as a whole ([`super::schema::normalize`]), as a PUT
//! body is; here only the operations' own rules are kept: a read-only
//! target is `mutability`, a path that does not parse is `invalidPath`, a
//! `remove` without a path or a filter matching nothing is `noTarget`.
//!
//! Operation names are accepted in any letter case and boolean values as
//! the strings `"True"`/`"False"`, as some identity providers send them.

use serde_json::{Map, Value};

use super::error::ScimError;
use super::filter::{self, AttrPath, Filter, Op, PatchPath};
use super::schema::{Mutability, Schema};

/// The PatchOp message schema.
pub const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
/// Most operations in one request.
const MAX_OPERATIONS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Add,
    Replace,
    Remove,
}

/// One operation, parsed.
#[derive(Debug)]
struct Operation {
    kind: Kind,
    path: Option<PatchPath>,
    value: Option<Value>,
}

fn key_of<'m>(m: &'m Map<String, Value>, name: &str) -> Option<&'m String> {
    m.keys().find(|k| k.eq_ignore_ascii_case(name))
}

fn parse_operations(body: &Map<String, Value>) -> Result<Vec<Operation>, ScimError> {
    if let Some(Value::Array(schemas)) = key_of(body, "schemas").and_then(|k| body.get(k))
        && !schemas.iter().any(|s| s.as_str() == Some(PATCH_OP))
    {
        return Err(ScimError::invalid_value(format!("a PATCH body's `schemas` must hold `{PATCH_OP}`")));
    }
    let Some(Value::Array(ops)) = key_of(body, "Operations").and_then(|k| body.get(k)) else {
        return Err(ScimError::invalid_value("a PATCH body needs `Operations`, an array"));
    };
    if ops.is_empty() || ops.len() > MAX_OPERATIONS {
        return Err(ScimError::invalid_value(format!("a PATCH body has 1 to {MAX_OPERATIONS} operations")));
    }
    ops.iter()
        .map(|op| {
            let Value::Object(o) = op else { return Err(ScimError::invalid_value("each operation is an object")) };
            let get = |k: &str| key_of(o, k).and_then(|k| o.get(k));
            let kind = match get("op").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
                Some("add") => Kind::Add,
                Some("replace") => Kind::Replace,
                Some("remove") => Kind::Remove,
                _ => return Err(ScimError::invalid_value("each operation's `op` is add, replace or remove")),
            };
            let path = match get("path") {
                None | Some(Value::Null) => None,
                Some(Value::String(p)) if p.trim().is_empty() => None,
                Some(Value::String(p)) => Some(filter::parse_path(p).map_err(ScimError::invalid_path)?),
                Some(_) => return Err(ScimError::invalid_path("`path` is a string")),
            };
            let value = get("value").filter(|v| !v.is_null()).cloned();
            if kind != Kind::Remove && value.is_none() {
                return Err(ScimError::invalid_value("add and replace need a `value`"));
            }
            Ok(Operation { kind, path, value })
        })
        .collect()
}

/// Applies the PATCH `body` to `doc` (the resource's writable attributes,
/// canonical names) for schema `s`.
pub fn apply(s: &Schema, doc: &mut Map<String, Value>, body: &Map<String, Value>) -> Result<(), ScimError> {
    for op in parse_operations(body)? {
        match (op.kind, op.path, op.value) {
            (Kind::Remove, None, _) => return Err(ScimError::no_target("remove needs a `path`")),
            (kind, None, Some(Value::Object(attrs))) => {
                for (k, v) in attrs {
                    let name = canonical(s, &k)?;
                    set_attr(s, doc, &name, kind, v);
                }
            }
            (_, None, _) => {
                return Err(ScimError::invalid_value("without a `path`, the value is an object of attributes"));
            }
            (kind, Some(PatchPath::Attr(p)), value) => {
                let name = target(s, &p)?;
                match (kind, p.sub, value) {
                    (Kind::Remove, None, None) => {
                        doc.remove(&name);
                    }
                    (Kind::Remove, None, Some(v)) => remove_values(doc, &name, &v),
                    (Kind::Remove, Some(sub), _) => for_each_object(doc, &name, |o| remove_key(o, &sub)),
                    (kind, None, Some(v)) => set_attr(s, doc, &name, kind, v),
                    (_, Some(sub), Some(v)) => match doc.entry(name).or_insert_with(|| Value::Object(Map::new())) {
                        Value::Object(o) => set_key(o, &sub, v),
                        Value::Array(items) => {
                            items.iter_mut().filter_map(Value::as_object_mut).for_each(|o| set_key(o, &sub, v.clone()))
                        }
                        other => *other = Value::Object(Map::from_iter([(sub, v)])),
                    },
                    (_, _, None) => return Err(ScimError::invalid_value("add and replace need a `value`")),
                }
            }
            (kind, Some(PatchPath::Values { attr, filter, sub }), value) => {
                let name = target(s, &attr)?;
                let exact = |a: &str, _: Option<&str>| s.case_exact(&name, Some(a));
                let items = match doc.get_mut(&name) {
                    Some(Value::Array(items)) => items,
                    _ => &mut Vec::new(),
                };
                let hits: Vec<usize> =
                    items.iter().enumerate().filter(|(_, v)| filter.matches(v, &exact)).map(|(i, _)| i).collect();
                if hits.is_empty() {
                    // `emails[type eq "work"].value` replaced or added where
                    // no work address exists yet: the value is added, as a
                    // replace of a missing attribute is (RFC 7644 §3.5.2.3).
                    match (kind, new_value_for(&filter, sub.as_deref(), value)) {
                        (Kind::Add | Kind::Replace, Some(v)) => {
                            push_value(doc, &name, v);
                            continue;
                        }
                        _ => return Err(ScimError::no_target(format!("no value of `{name}` matches the filter"))),
                    }
                }
                let items = match doc.get_mut(&name) {
                    Some(Value::Array(items)) => items,
                    _ => return Err(ScimError::no_target(format!("`{name}` has no values"))),
                };
                if kind == Kind::Remove && sub.is_none() {
                    let mut i = 0;
                    items.retain(|_| {
                        i += 1;
                        !hits.contains(&(i - 1))
                    });
                    continue;
                }
                let chosen = items.iter_mut().enumerate().filter(|(i, _)| hits.contains(i)).map(|(_, v)| v);
                match (kind, sub, value) {
                    (Kind::Remove, Some(sub), _) => {
                        chosen.filter_map(Value::as_object_mut).for_each(|o| remove_key(o, &sub))
                    }
                    (_, Some(sub), Some(v)) => {
                        chosen.filter_map(Value::as_object_mut).for_each(|o| set_key(o, &sub, v.clone()))
                    }
                    (Kind::Replace, None, Some(v)) => chosen.for_each(|item| *item = v.clone()),
                    (_, None, Some(Value::Object(v))) => {
                        for o in chosen.filter_map(Value::as_object_mut) {
                            for (k, x) in &v {
                                set_key(o, k, x.clone());
                            }
                        }
                    }
                    (_, _, _) => return Err(ScimError::invalid_value("the value does not fit the path")),
                }
            }
        }
    }
    Ok(())
}

/// The value a filter with no match asks to add: for `attr[key eq "v"].sub`
/// an object `{key: v, sub: value}`; for `attr[key eq "v"]` the value with
/// `key` set. Any other filter names no value to make.
fn new_value_for(filter: &Filter, sub: Option<&str>, value: Option<Value>) -> Option<Value> {
    let Filter::Compare(AttrPath { attr: key, sub: None, .. }, Op::Eq, want) = filter else { return None };
    let mut o = match (sub, value?) {
        (Some(sub), v) => Map::from_iter([(sub.to_owned(), v)]),
        (None, Value::Object(o)) => o,
        (None, _) => return None,
    };
    set_key(&mut o, key, want.clone());
    Some(Value::Object(o))
}

/// The canonical name of attribute `name` of `s` (or `externalId`); a
/// read-only one is `mutability`, an unknown one `invalidPath`.
fn canonical(s: &Schema, name: &str) -> Result<String, ScimError> {
    let bare = super::schema::strip_urn(s.id, name);
    if bare.eq_ignore_ascii_case("externalId") {
        return Ok("externalId".into());
    }
    if ["id", "meta", "schemas"].iter().any(|r| r.eq_ignore_ascii_case(bare)) {
        return Err(ScimError::mutability(format!("`{bare}` is read-only")));
    }
    match s.attr(bare) {
        Some(a) if a.mutability == Mutability::ReadOnly => {
            Err(ScimError::mutability(format!("`{}` is read-only", a.name)))
        }
        Some(a) => Ok(a.name.to_owned()),
        None => Err(ScimError::invalid_path(format!("`{bare}` is not an attribute of {}", s.name))),
    }
}

fn target(s: &Schema, p: &AttrPath) -> Result<String, ScimError> {
    if let Some(urn) = &p.urn
        && !urn.eq_ignore_ascii_case(s.id)
    {
        return Err(ScimError::invalid_path(format!("`{urn}` is not a schema of {}", s.name)));
    }
    canonical(s, &p.attr)
}

fn set_key(o: &mut Map<String, Value>, key: &str, v: Value) {
    let k = key_of(o, key).cloned().unwrap_or_else(|| key.to_owned());
    o.insert(k, v);
}

fn remove_key(o: &mut Map<String, Value>, key: &str) {
    if let Some(k) = key_of(o, key).cloned() {
        o.remove(&k);
    }
}

fn for_each_object(doc: &mut Map<String, Value>, name: &str, mut f: impl FnMut(&mut Map<String, Value>)) {
    match doc.get_mut(name) {
        Some(Value::Object(o)) => f(o),
        Some(Value::Array(items)) => items.iter_mut().filter_map(Value::as_object_mut).for_each(f),
        _ => {}
    }
}

fn push_value(doc: &mut Map<String, Value>, name: &str, v: Value) {
    match doc.entry(name.to_owned()).or_insert_with(|| Value::Array(Vec::new())) {
        Value::Array(items) => items.push(v),
        other => *other = Value::Array(vec![v]),
    }
}

/// Whether two values of a multi-valued attribute are the same value: for
/// complex ones, the same `value` sub-attribute when both have one.
fn same_value(a: &Value, b: &Value) -> bool {
    match (filter::field(a, "value"), filter::field(b, "value")) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// `remove` with a value, on a multi-valued attribute: those values go
/// (`{"op": "remove", "path": "members", "value": [{"value": "ID"}]}`).
fn remove_values(doc: &mut Map<String, Value>, name: &str, v: &Value) {
    let gone: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        one => vec![one],
    };
    if let Some(Value::Array(items)) = doc.get_mut(name) {
        items.retain(|item| !gone.iter().any(|g| same_value(item, g)));
    }
}

/// `add` or `replace` of a whole attribute: add appends to a multi-valued
/// attribute (values already there are not doubled) and merges into a
/// complex one; replace merges into a complex one and otherwise replaces.
fn set_attr(s: &Schema, doc: &mut Map<String, Value>, name: &str, kind: Kind, v: Value) {
    let multi = s.attr(name).is_some_and(|a| a.multi);
    match (kind, doc.get_mut(name), v) {
        (Kind::Add, Some(Value::Array(items)), v) if multi => {
            let new: Vec<Value> = match v {
                Value::Array(a) => a,
                one => vec![one],
            };
            for n in new {
                if !items.iter().any(|i| same_value(i, &n)) {
                    items.push(n);
                }
            }
        }
        (_, Some(Value::Object(o)), Value::Object(v)) if !multi => {
            for (k, x) in v {
                set_key(o, &k, x);
            }
        }
        (_, _, v) => {
            doc.insert(name.to_owned(), v);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::schema::{GROUP_SCHEMA, USER_SCHEMA};
    use super::*;

    fn patch(s: &Schema, doc: Value, ops: Value) -> Result<Value, ScimError> {
        let mut doc = doc.as_object().unwrap().clone();
        let body = json!({ "schemas": [PATCH_OP], "Operations": ops });
        apply(s, &mut doc, body.as_object().unwrap())?;
        Ok(Value::Object(doc))
    }

    #[test]
    fn user_operations() {
        let doc = json!({"userName": "a", "active": true, "emails": [{"value": "a@x.org", "type": "work"}]});
        let out = patch(&USER_SCHEMA, doc.clone(), json!([{"op": "Replace", "value": {"active": "False"}}])).unwrap();
        assert_eq!(out["active"], json!("False"), "normalized afterwards");
        let out =
            patch(&USER_SCHEMA, doc.clone(), json!([{"op": "replace", "path": "active", "value": false}])).unwrap();
        assert_eq!(out["active"], json!(false));
        let out = patch(
            &USER_SCHEMA,
            doc.clone(),
            json!([{"op": "replace", "path": "emails[type eq \"work\"].value", "value": "b@x.org"},
                   {"op": "add", "path": "emails[type eq \"home\"].value", "value": "h@x.org"},
                   {"op": "add", "path": "name.givenName", "value": "A"}]),
        )
        .unwrap();
        assert_eq!(out["emails"], json!([{"value": "b@x.org", "type": "work"}, {"value": "h@x.org", "type": "home"}]));
        assert_eq!(out["name"], json!({"givenName": "A"}));
        let out = patch(&USER_SCHEMA, out, json!([{"op": "remove", "path": "emails[type eq \"work\"]"}])).unwrap();
        assert_eq!(out["emails"], json!([{"value": "h@x.org", "type": "home"}]));
        for (ops, scim_type) in [
            (json!([{"op": "remove"}]), "noTarget"),
            (json!([{"op": "remove", "path": "emails[type eq \"x\"]"}]), "noTarget"),
            (json!([{"op": "replace", "path": "groups", "value": []}]), "mutability"),
            (json!([{"op": "replace", "path": "id", "value": "x"}]), "mutability"),
            (json!([{"op": "add", "path": "emails[", "value": 1}]), "invalidPath"),
            (json!([{"op": "add", "path": "nickName", "value": 1}]), "invalidPath"),
            (json!([{"op": "move", "path": "active"}]), "invalidValue"),
            (json!([{"op": "add", "path": "active"}]), "invalidValue"),
        ] {
            let e = patch(&USER_SCHEMA, doc.clone(), ops.clone()).unwrap_err();
            assert_eq!(e.scim_type, Some(scim_type), "{ops}: {}", e.detail);
        }
    }

    #[test]
    fn members_add_and_remove() {
        let doc = json!({"displayName": "eng", "members": [{"value": "p1"}]});
        let out = patch(
            &GROUP_SCHEMA,
            doc,
            json!([{"op": "add", "path": "members", "value": [{"value": "p2"}, {"value": "p1"}]}]),
        )
        .unwrap();
        assert_eq!(out["members"], json!([{"value": "p1"}, {"value": "p2"}]));
        let out =
            patch(&GROUP_SCHEMA, out.clone(), json!([{"op": "remove", "path": "members[value eq \"p1\"]"}])).unwrap();
        assert_eq!(out["members"], json!([{"value": "p2"}]));
        let out = patch(&GROUP_SCHEMA, out, json!([{"op": "remove", "path": "members", "value": [{"value": "p2"}]}]))
            .unwrap();
        assert_eq!(out["members"], json!([]));
        let out = patch(
            &GROUP_SCHEMA,
            out,
            json!([{"op": "add", "value": {"members": [{"value": "p3"}], "displayName": "ops"}}]),
        )
        .unwrap();
        assert_eq!((out["members"].clone(), out["displayName"].clone()), (json!([{"value": "p3"}]), json!("ops")));
        let out = patch(&GROUP_SCHEMA, out, json!([{"op": "remove", "path": "members"}])).unwrap();
        assert!(out.get("members").is_none());
    }
}
