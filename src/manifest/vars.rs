//! Variables: `${NAME}` in any string of a manifest, so the same manifests serve dev,
//! staging and production whose ids and URLs differ.
//!
//! A value comes from, in this order: `--var NAME=VALUE`, the environment, then the
//! `Values` document the chosen target names (`targets.<t>.values: <name>`). `$${NAME}` is a
//! literal `${NAME}`. An undefined variable is a manifest error at the string's position.

use std::collections::BTreeMap;

use serde_json::Value;

/// Where variable values come from.
pub struct Resolver<'a> {
    pub cli: &'a [(String, String)],
    pub values: BTreeMap<String, String>,
    /// Look-ups of the environment (a function, so tests need not touch the process env).
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

impl Resolver<'_> {
    pub fn get(&self, name: &str) -> Option<String> {
        self.cli
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| (self.env)(name))
            .or_else(|| self.values.get(name).cloned())
    }
}

/// A problem with one string.
pub enum VarError {
    Undefined { pointer: String, name: String },
    Malformed { pointer: String },
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Expand one string; `used` collects the names and values it needed.
fn expand(
    s: &str,
    pointer: &str,
    r: &Resolver<'_>,
    used: &mut BTreeMap<String, String>,
    errors: &mut Vec<VarError>,
) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$${") {
            // escaped: `$${X}` is the text `${X}`
            out.push_str("${");
            rest = t;
        } else if let Some(t) = tail.strip_prefix("${") {
            match t.find('}') {
                Some(end) if is_name(&t[..end]) => {
                    let name = &t[..end];
                    match r.get(name) {
                        Some(v) => {
                            out.push_str(&v);
                            used.insert(name.to_owned(), v);
                        }
                        None => {
                            // left as written (an error unless the caller excuses it)
                            out.push_str(&format!("${{{name}}}"));
                            errors.push(VarError::Undefined {
                                pointer: pointer.to_owned(),
                                name: name.to_owned(),
                            })
                        }
                    }
                    rest = &t[end + 1..];
                }
                _ => {
                    errors.push(VarError::Malformed {
                        pointer: pointer.to_owned(),
                    });
                    out.push_str(tail);
                    rest = "";
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Expand every string in `value` (not mapping keys).
/// Whether any string in `value` has a `$` (a variable reference, or an escaped `$${`).
pub fn mentions(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('$'),
        Value::Array(items) => items.iter().any(mentions),
        Value::Object(map) => map.values().any(mentions),
        _ => false,
    }
}

pub fn substitute(
    value: &mut Value,
    pointer: &str,
    r: &Resolver<'_>,
    used: &mut BTreeMap<String, String>,
    errors: &mut Vec<VarError>,
) {
    match value {
        Value::String(s) if s.contains('$') => *s = expand(s, pointer, r, used, errors),
        Value::Array(items) => {
            for (i, v) in items.iter_mut().enumerate() {
                substitute(v, &format!("{pointer}/{i}"), r, used, errors);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let child = format!("{pointer}/{}", k.replace('~', "~0").replace('/', "~1"));
                substitute(v, &child, r, used, errors);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn resolver<'a>(
        cli: &'a [(String, String)],
        env: &'a dyn Fn(&str) -> Option<String>,
    ) -> Resolver<'a> {
        Resolver {
            cli,
            values: BTreeMap::from([
                ("GROUP".into(), "from-values".into()),
                ("URL".into(), "https://v".into()),
            ]),
            env,
        }
    }

    #[test]
    fn precedence_escapes_and_errors() {
        let cli = vec![("URL".to_owned(), "https://cli".to_owned())];
        let env = |k: &str| (k == "GROUP").then(|| "from-env".to_owned());
        let r = resolver(&cli, &env);
        let mut v = json!({"a": "${URL}/fhir", "b": ["x-${GROUP}-y", "$${LITERAL}", "costs $5"], "c": "${NOPE}", "d": "${bad name}"});
        let (mut used, mut errors) = (BTreeMap::new(), Vec::new());
        substitute(&mut v, "", &r, &mut used, &mut errors);
        assert_eq!(v["a"], "https://cli/fhir");
        assert_eq!(v["b"], json!(["x-from-env-y", "${LITERAL}", "costs $5"]));
        assert_eq!(used.len(), 2);
        assert!(
            matches!(&errors[..], [VarError::Undefined { pointer, name }, VarError::Malformed { .. }] if pointer == "/c" && name == "NOPE")
        );
    }
}
