//! The SCIM schemas this service provider serves (RFC 7643 §4, §7, §8.7):
//! one table of attributes per schema, read by the input check
//! ([`normalize`]), the filters (`caseExact`), the projection of
//! `attributes`/`excludedAttributes` and the discovery endpoints, so what
//! `/Schemas` publishes is what the server does.
//!
//! Users carry what joiners, movers and leavers need (userName, names,
//! emails, active, and the read-only groups); groups carry a display name
//! and members, who are people only.

use serde_json::{Map, Value, json};

use super::error::ScimError;

/// The User schema URN.
pub const USER: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// The Group schema URN.
pub const GROUP: &str = "urn:ietf:params:scim:schemas:core:2.0:Group";
/// The ServiceProviderConfig schema URN.
pub const SERVICE_PROVIDER_CONFIG: &str = "urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig";
/// The ResourceType schema URN.
pub const RESOURCE_TYPE: &str = "urn:ietf:params:scim:schemas:core:2.0:ResourceType";
/// The Schema schema URN.
pub const SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:Schema";

/// Longest string value accepted in a resource, in bytes.
const MAX_STRING: usize = 2048;
/// Most values of a multi-valued attribute (a group's members).
const MAX_VALUES: usize = 10_000;

/// An attribute's data type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// Text.
    String,
    /// true or false.
    Boolean,
    /// Sub-attributes.
    Complex,
    /// A URI.
    Reference,
    /// A whole number.
    Integer,
}

/// Whether and when an attribute may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    /// Only the server writes it; input is ignored.
    ReadOnly,
    /// Any write.
    ReadWrite,
    /// Set once (with a value); here: members' identifying sub-attributes.
    Immutable,
}

/// When an attribute is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Returned {
    /// Always, whatever `attributes` asks.
    Always,
    /// Unless excluded.
    Default,
}

/// One attribute of a schema.
#[derive(Debug, Clone, Copy)]
pub struct Attr {
    /// Its name, as served.
    pub name: &'static str,
    /// Its type.
    pub ty: Type,
    /// Multi-valued.
    pub multi: bool,
    /// Required on input.
    pub required: bool,
    /// Compared with regard to letter case.
    pub case_exact: bool,
    /// Who may write it.
    pub mutability: Mutability,
    /// When it is returned.
    pub returned: Returned,
    /// Unique across the server.
    pub unique: bool,
    /// Sub-attributes of a complex attribute.
    pub sub: &'static [Attr],
    /// Suggested values.
    pub canonical: &'static [&'static str],
    /// What a reference may point to.
    pub refs: &'static [&'static str],
    /// What it is.
    pub description: &'static str,
}

const fn attr(name: &'static str, ty: Type, description: &'static str) -> Attr {
    Attr {
        name,
        ty,
        multi: false,
        required: false,
        case_exact: false,
        mutability: Mutability::ReadWrite,
        returned: Returned::Default,
        unique: false,
        sub: &[],
        canonical: &[],
        refs: &[],
        description,
    }
}

impl Attr {
    const fn multi(self) -> Self {
        Self { multi: true, ..self }
    }
    const fn required(self) -> Self {
        Self { required: true, ..self }
    }
    const fn exact(self) -> Self {
        Self { case_exact: true, ..self }
    }
    const fn read_only(self) -> Self {
        Self { mutability: Mutability::ReadOnly, ..self }
    }
    const fn immutable(self) -> Self {
        Self { mutability: Mutability::Immutable, ..self }
    }
    const fn always(self) -> Self {
        Self { returned: Returned::Always, ..self }
    }
    const fn unique(self) -> Self {
        Self { unique: true, ..self }
    }
    const fn sub(self, sub: &'static [Attr]) -> Self {
        Self { sub, ..self }
    }
    const fn canonical(self, canonical: &'static [&'static str]) -> Self {
        Self { canonical, ..self }
    }
    const fn refs(self, refs: &'static [&'static str]) -> Self {
        Self { refs, ..self }
    }

    /// Its sub-attribute `name` (any letter case).
    pub fn sub_attr(&self, name: &str) -> Option<&'static Attr> {
        self.sub.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }
}

/// A schema: its URN, name and attributes.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// URN.
    pub id: &'static str,
    /// Name.
    pub name: &'static str,
    /// What it describes.
    pub description: &'static str,
    /// Its attributes.
    pub attrs: &'static [Attr],
}

impl Schema {
    /// Attribute `name` (any letter case, optionally qualified by this
    /// schema's URN).
    pub fn attr(&self, name: &str) -> Option<&'static Attr> {
        let name = strip_urn(self.id, name);
        self.attrs.iter().find(|a| a.name.eq_ignore_ascii_case(name))
    }

    /// Whether values of `attr` (`.sub`) compare with regard to letter case.
    /// The common attributes: `id`, `externalId` and `meta`'s are case-exact.
    pub fn case_exact(&self, attr: &str, sub: Option<&str>) -> bool {
        if ["id", "externalId", "meta"].iter().any(|c| c.eq_ignore_ascii_case(attr)) {
            return true;
        }
        match (self.attr(attr), sub) {
            (Some(a), None) => a.case_exact,
            (Some(a), Some(s)) => a.sub_attr(s).is_some_and(|s| s.case_exact),
            (None, _) => false,
        }
    }
}

/// `name` without a `URN:` prefix naming schema `urn`.
pub fn strip_urn<'n>(urn: &str, name: &'n str) -> &'n str {
    match name.get(..urn.len()) {
        Some(head) if head.eq_ignore_ascii_case(urn) => name.get(urn.len() + 1..).unwrap_or(name),
        _ => name,
    }
}

const EMAIL_TYPES: &[&str] = &["work", "home", "other"];

/// The User schema (RFC 7643 §4.1), the attributes Hallmark keeps.
pub const USER_SCHEMA: Schema = Schema {
    id: USER,
    name: "User",
    description: "A person provisioned by the identity provider",
    attrs: &[
        attr("userName", Type::String, "Unique identifier for the person, used to log in").required().unique(),
        attr("name", Type::Complex, "The components of the person's name").sub(&[
            attr("formatted", Type::String, "The full name, formatted for display"),
            attr("familyName", Type::String, "The family name"),
            attr("givenName", Type::String, "The given name"),
        ]),
        attr("displayName", Type::String, "The name of the person, suitable for display"),
        attr("emails", Type::Complex, "Email addresses; the primary one (or else the first) may be used to log in")
            .multi()
            .sub(&[
                attr("value", Type::String, "An email address"),
                attr("type", Type::String, "work, home or other").canonical(EMAIL_TYPES),
                attr("primary", Type::Boolean, "The preferred address"),
            ]),
        attr("active", Type::Boolean, "false makes the person a leaver: every certificate issued to them is revoked"),
        attr("groups", Type::Complex, "The groups the person is in").multi().read_only().sub(&[
            attr("value", Type::String, "The group's id").exact().read_only(),
            attr("$ref", Type::Reference, "The group's URI").exact().read_only().refs(&["Group"]),
            attr("display", Type::String, "The group's displayName").read_only(),
        ]),
    ],
};

/// The Group schema (RFC 7643 §4.2); members are people only.
pub const GROUP_SCHEMA: Schema = Schema {
    id: GROUP,
    name: "Group",
    description: "A group of people; policy reads its displayName at each member's login",
    attrs: &[
        attr("displayName", Type::String, "The group's name, unique").required().unique(),
        attr("members", Type::Complex, "The people in the group").multi().sub(&[
            attr("value", Type::String, "The person's id").exact().immutable(),
            attr("$ref", Type::Reference, "The person's URI").exact().immutable().refs(&["User"]),
            attr("type", Type::String, "The member's resource type").immutable().canonical(&["User"]),
        ]),
    ],
};

/// The ServiceProviderConfig schema (RFC 7643 §5).
pub const SERVICE_PROVIDER_CONFIG_SCHEMA: Schema = Schema {
    id: SERVICE_PROVIDER_CONFIG,
    name: "ServiceProviderConfig",
    description: "Schema for representing the service provider's configuration",
    attrs: &[
        attr("documentationUri", Type::Reference, "Help documentation").read_only().refs(&["external"]),
        attr("patch", Type::Complex, "PATCH configuration").required().read_only().sub(&[supported()]),
        attr("bulk", Type::Complex, "Bulk configuration").required().read_only().sub(&[
            supported(),
            attr("maxOperations", Type::Integer, "Most operations in one request").required().read_only(),
            attr("maxPayloadSize", Type::Integer, "Largest payload, bytes").required().read_only(),
        ]),
        attr("filter", Type::Complex, "Filter configuration")
            .required()
            .read_only()
            .sub(&[supported(), attr("maxResults", Type::Integer, "Most resources returned").required().read_only()]),
        attr("changePassword", Type::Complex, "Password change configuration")
            .required()
            .read_only()
            .sub(&[supported()]),
        attr("sort", Type::Complex, "Sort configuration").required().read_only().sub(&[supported()]),
        attr("etag", Type::Complex, "ETag configuration").required().read_only().sub(&[supported()]),
        attr("authenticationSchemes", Type::Complex, "Supported authentication schemes")
            .multi()
            .required()
            .read_only()
            .sub(&[
                attr("type", Type::String, "The scheme").required().read_only(),
                attr("name", Type::String, "Its name").required().read_only(),
                attr("description", Type::String, "What it is").required().read_only(),
                attr("specUri", Type::Reference, "Its specification").read_only().refs(&["external"]),
                attr("documentationUri", Type::Reference, "Its documentation").read_only().refs(&["external"]),
                attr("primary", Type::Boolean, "The preferred scheme").read_only(),
            ]),
    ],
};

const fn supported() -> Attr {
    attr("supported", Type::Boolean, "Whether the operation is supported").required().read_only()
}

/// The ResourceType schema (RFC 7643 §6).
pub const RESOURCE_TYPE_SCHEMA: Schema = Schema {
    id: RESOURCE_TYPE,
    name: "ResourceType",
    description: "Specifies the schema that describes a SCIM resource type",
    attrs: &[
        attr("id", Type::String, "The resource type's id").read_only().always(),
        attr("name", Type::String, "Its name").required().read_only(),
        attr("description", Type::String, "What it is").read_only(),
        attr("endpoint", Type::Reference, "Its endpoint, relative to the base URL")
            .required()
            .read_only()
            .refs(&["uri"]),
        attr("schema", Type::Reference, "Its primary schema's URN").required().read_only().exact().refs(&["uri"]),
        attr("schemaExtensions", Type::Complex, "Extensions of its schema").multi().read_only().sub(&[
            attr("schema", Type::Reference, "The extension's URN").required().read_only().exact().refs(&["uri"]),
            attr("required", Type::Boolean, "Whether it is required").required().read_only(),
        ]),
    ],
};

const SCHEMA_ATTRIBUTE_SUBS: &[Attr] = &[
    attr("name", Type::String, "The attribute's name").required().read_only().exact(),
    attr("type", Type::String, "Its data type").required().read_only().canonical(&[
        "string",
        "complex",
        "boolean",
        "decimal",
        "integer",
        "dateTime",
        "reference",
        "binary",
    ]),
    attr("multiValued", Type::Boolean, "Whether it is multi-valued").required().read_only(),
    attr("description", Type::String, "What it is").read_only(),
    attr("required", Type::Boolean, "Whether it is required").required().read_only(),
    attr("canonicalValues", Type::String, "Suggested values").multi().read_only(),
    attr("caseExact", Type::Boolean, "Whether case matters").read_only(),
    attr("mutability", Type::String, "Who may write it").read_only().canonical(&[
        "readOnly",
        "readWrite",
        "immutable",
        "writeOnly",
    ]),
    attr("returned", Type::String, "When it is returned")
        .read_only()
        .canonical(&["always", "never", "default", "request"]),
    attr("uniqueness", Type::String, "How unique it is").read_only().canonical(&["none", "server", "global"]),
    attr("referenceTypes", Type::String, "What a reference may point to").multi().read_only(),
];

/// The Schema schema (RFC 7643 §7).
pub const SCHEMA_SCHEMA: Schema = Schema {
    id: SCHEMA,
    name: "Schema",
    description: "Specifies the schema attribute definitions of a resource",
    attrs: &[
        attr("id", Type::String, "The schema's URN").read_only().exact().always(),
        attr("name", Type::String, "Its name").read_only(),
        attr("description", Type::String, "What it describes").read_only(),
        attr("attributes", Type::Complex, "Its attributes").multi().required().read_only().sub(SCHEMA_ATTRIBUTE_SUBS),
    ],
};

/// Every schema `/Schemas` serves.
pub const ALL: [Schema; 5] =
    [USER_SCHEMA, GROUP_SCHEMA, SERVICE_PROVIDER_CONFIG_SCHEMA, RESOURCE_TYPE_SCHEMA, SCHEMA_SCHEMA];

fn type_name(t: Type) -> &'static str {
    match t {
        Type::String => "string",
        Type::Boolean => "boolean",
        Type::Complex => "complex",
        Type::Reference => "reference",
        Type::Integer => "integer",
    }
}

fn attr_json(a: &Attr) -> Value {
    let mut v = json!({
        "name": a.name,
        "type": type_name(a.ty),
        "multiValued": a.multi,
        "description": a.description,
        "required": a.required,
        "caseExact": a.case_exact,
        "mutability": match a.mutability {
            Mutability::ReadOnly => "readOnly",
            Mutability::ReadWrite => "readWrite",
            Mutability::Immutable => "immutable",
        },
        "returned": match a.returned { Returned::Always => "always", Returned::Default => "default" },
        "uniqueness": if a.unique { "server" } else { "none" },
    });
    if let Some(o) = v.as_object_mut() {
        if !a.canonical.is_empty() {
            o.insert("canonicalValues".into(), json!(a.canonical));
        }
        if !a.refs.is_empty() {
            o.insert("referenceTypes".into(), json!(a.refs));
        }
        if !a.sub.is_empty() {
            o.insert("subAttributes".into(), Value::Array(a.sub.iter().map(attr_json).collect()));
        }
    }
    v
}

/// Schema `s` as `/Schemas` serves it (`meta.location` is added by the caller).
pub fn schema_json(s: &Schema) -> Value {
    json!({
        "schemas": [SCHEMA],
        "id": s.id,
        "name": s.name,
        "description": s.description,
        "attributes": s.attrs.iter().map(attr_json).collect::<Vec<_>>(),
    })
}

fn invalid(msg: String) -> ScimError {
    ScimError::invalid_value(msg)
}

/// A boolean, also from the strings `"true"` and `"false"` in any letter
/// case (some identity providers send `"False"` in PATCH operations).
fn boolean(name: &str, v: &Value) -> Result<bool, ScimError> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(false),
        other => Err(invalid(format!("`{name}` must be true or false, not {other}"))),
    }
}

/// One value of attribute `a` (not the array of a multi-valued one),
/// checked and with its sub-attributes' names made canonical; `None` when
/// it is null or empty (unassigned).
fn single(a: &Attr, path: &str, v: &Value) -> Result<Option<Value>, ScimError> {
    match (a.ty, v) {
        (_, Value::Null) => Ok(None),
        (Type::Boolean, v) => Ok(Some(Value::Bool(boolean(path, v)?))),
        (Type::String | Type::Reference, Value::String(s)) => {
            if s.len() > MAX_STRING {
                return Err(invalid(format!("`{path}` is longer than {MAX_STRING} bytes")));
            }
            Ok((!s.is_empty()).then(|| Value::String(s.clone())))
        }
        (Type::Integer, Value::Number(n)) if n.is_i64() => Ok(Some(Value::Number(n.clone()))),
        (Type::Complex, Value::Object(o)) => {
            let mut out = Map::new();
            for (k, v) in o {
                // Unknown sub-attributes are ignored, as unknown attributes are.
                let Some(s) = a.sub_attr(k) else { continue };
                if s.mutability == Mutability::ReadOnly {
                    continue;
                }
                if let Some(v) = single(s, &format!("{path}.{}", s.name), v)? {
                    out.insert(s.name.to_owned(), v);
                }
            }
            Ok((!out.is_empty()).then_some(Value::Object(out)))
        }
        (ty, other) => Err(invalid(format!("`{path}` must be a {}, not {other}", type_name(ty)))),
    }
}

/// The writable attributes of `input` as schema `s` defines them, checked
/// and under their canonical names: unknown and read-only attributes (and
/// `id`, `meta`, `schemas`) are dropped, unassigned ones (null, empty) left
/// out, `externalId` kept. A required attribute missing is `invalidValue`.
pub fn normalize(s: &Schema, input: &Map<String, Value>) -> Result<Map<String, Value>, ScimError> {
    let mut out = Map::new();
    for (k, v) in input {
        if k.eq_ignore_ascii_case("externalId") {
            match v {
                Value::Null => {}
                Value::String(x) if x.is_empty() => {}
                Value::String(x) if x.len() <= MAX_STRING => {
                    out.insert("externalId".into(), v.clone());
                }
                _ => return Err(invalid(format!("`externalId` must be a string of at most {MAX_STRING} bytes"))),
            }
            continue;
        }
        let Some(a) = s.attr(k) else { continue };
        if a.mutability == Mutability::ReadOnly {
            continue;
        }
        let value = if a.multi {
            let items: Vec<&Value> = match v {
                Value::Array(items) => items.iter().collect(),
                Value::Null => Vec::new(),
                one => vec![one],
            };
            if items.len() > MAX_VALUES {
                return Err(invalid(format!("`{}` has more than {MAX_VALUES} values", a.name)));
            }
            let mut kept = Vec::with_capacity(items.len());
            for item in items {
                if let Some(v) = single(a, a.name, item)?
                    && !kept.contains(&v)
                {
                    kept.push(v);
                }
            }
            (!kept.is_empty()).then_some(Value::Array(kept))
        } else {
            single(a, a.name, v)?
        };
        if let Some(v) = value {
            out.insert(a.name.to_owned(), v);
        }
    }
    if let Some(missing) = s.attrs.iter().find(|a| a.required && !out.contains_key(a.name)) {
        return Err(invalid(format!("`{}` is required", missing.name)));
    }
    Ok(out)
}

/// The string value of `key` in `m`, if any.
pub fn text<'m>(m: &'m Map<String, Value>, key: &str) -> Option<&'m str> {
    m.get(key).and_then(Value::as_str)
}

/// Applies `attributes` / `excludedAttributes` (RFC 7644 §3.4.2.5) to a
/// rendered resource of schema `s`: `schemas`, `id` and attributes
/// returned always stay; `name.sub` keeps or drops one sub-attribute.
pub fn project(s: &Schema, resource: &mut Value, attributes: &[String], excluded: &[String]) {
    let Some(o) = resource.as_object_mut() else { return };
    let always = |k: &str| {
        ["schemas", "id"].iter().any(|a| a.eq_ignore_ascii_case(k))
            || s.attr(k).is_some_and(|a| a.returned == Returned::Always)
    };
    let split = |p: &String| -> (String, Option<String>) {
        let p = strip_urn(s.id, p);
        match p.split_once('.') {
            Some((a, sub)) => (a.to_owned(), Some(sub.to_owned())),
            None => (p.to_owned(), None),
        }
    };
    if !attributes.is_empty() {
        let wanted: Vec<(String, Option<String>)> = attributes.iter().map(split).collect();
        o.retain(|k, v| {
            if always(k) {
                return true;
            }
            let subs: Vec<&Option<String>> =
                wanted.iter().filter(|(a, _)| a.eq_ignore_ascii_case(k)).map(|(_, sub)| sub).collect();
            if subs.is_empty() {
                return false;
            }
            if subs.iter().any(|sub| sub.is_none()) {
                return true;
            }
            let keep = |m: &mut Map<String, Value>| {
                m.retain(|sk, _| subs.iter().flat_map(|s| s.as_deref()).any(|s| s.eq_ignore_ascii_case(sk)))
            };
            match v {
                Value::Object(m) => keep(m),
                Value::Array(items) => items.iter_mut().filter_map(Value::as_object_mut).for_each(keep),
                _ => {}
            }
            true
        });
    }
    for (a, sub) in excluded.iter().map(split) {
        if always(&a) {
            continue;
        }
        let key = o.keys().find(|k| k.eq_ignore_ascii_case(&a)).cloned();
        let Some(key) = key else { continue };
        match sub {
            None => {
                o.remove(&key);
            }
            Some(sub) => {
                let drop = |m: &mut Map<String, Value>| m.retain(|k, _| !k.eq_ignore_ascii_case(&sub));
                match o.get_mut(&key) {
                    Some(Value::Object(m)) => drop(m),
                    Some(Value::Array(items)) => items.iter_mut().filter_map(Value::as_object_mut).for_each(drop),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_keeps_what_the_schema_defines() {
        let input = json!({
            "schemas": [USER], "id": "x", "USERNAME": "alice", "Active": "False", "groups": [{"value": "g"}],
            "emails": {"VALUE": "a@example.org", "primary": true, "bogus": 1}, "nickName": "al",
            "name": {"givenName": "Alice", "familyName": null}, "externalId": "e1", "displayName": ""
        });
        let out = normalize(&USER_SCHEMA, input.as_object().unwrap()).unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"userName": "alice", "active": false, "emails": [{"value": "a@example.org", "primary": true}],
                   "name": {"givenName": "Alice"}, "externalId": "e1"})
        );
        let missing = normalize(&USER_SCHEMA, json!({"active": true}).as_object().unwrap()).unwrap_err();
        assert!(missing.detail.contains("userName"));
        assert!(normalize(&USER_SCHEMA, json!({"userName": 5}).as_object().unwrap()).is_err());
        assert!(normalize(&USER_SCHEMA, json!({"userName": "a", "active": "maybe"}).as_object().unwrap()).is_err());
    }

    #[test]
    fn projection() {
        let mut r = json!({"schemas": [USER], "id": "1", "userName": "a", "displayName": "A",
                           "name": {"givenName": "g", "familyName": "f"}});
        project(&USER_SCHEMA, &mut r, &["name.givenName".into()], &[]);
        assert_eq!(r, json!({"schemas": [USER], "id": "1", "name": {"givenName": "g"}}));
        let mut r = json!({"id": "1", "userName": "a", "displayName": "A"});
        project(&USER_SCHEMA, &mut r, &[], &["DISPLAYNAME".into(), "id".into()]);
        assert_eq!(r, json!({"id": "1", "userName": "a"}));
        assert!(USER_SCHEMA.case_exact("id", None) && !USER_SCHEMA.case_exact("userName", None));
        assert!(GROUP_SCHEMA.case_exact("members", Some("value")));
    }
}
