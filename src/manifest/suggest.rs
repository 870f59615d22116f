//! "Did you mean …?" for misspelt kinds, fields and enum values (responsibilities), and
//! plain sentences for schema errors whose raw form is a `oneOf` dump.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use serde_json::Value;

/// Edit distance (insertions, deletions, substitutions), case-insensitive.
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `word`, if it is close enough to be a typo (at most a third
/// of the word's letters differ, and at least one candidate is not `word` itself).
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// Every property name the manifest schema knows (fields of every kind, at any depth).
static FIELDS: LazyLock<BTreeSet<String>> = LazyLock::new(|| {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Object(props)) = m.get("properties") {
                    out.extend(props.keys().cloned());
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(&super::schema::manifest_schema(), &mut out);
    out
});

/// A "did you mean" sentence for a schema error message, if one fits:
/// `"Teem" is not one of the allowed values: …` and `('displayNam' was unexpected)`.
pub fn did_you_mean(message: &str) -> Option<String> {
    if let Some((value, list)) = message.split_once(" is not one of the allowed values: ") {
        let value = value.rsplit(": ").next().unwrap_or(value).trim_matches('"');
        let found = closest(value, list.split(", "))?;
        return Some(format!("did you mean '{found}'?"));
    }
    if message.contains("was unexpected") {
        let start = message.find('\'')? + 1;
        let end = start + message[start..].find('\'')?;
        let field = &message[start..end];
        let found = closest(field, FIELDS.iter().map(String::as_str))?;
        return Some(format!("did you mean '{found}'?"));
    }
    None
}

/// A sentence instead of a `oneOf` dump for a staff reference whose `npi` is not a
/// string of 10 digits (YAML reads an unquoted `npi: 1234567890` as a number).
pub fn npi_message(value_at_pointer: Option<&Value>) -> Option<(String, String)> {
    let npi = value_at_pointer?.get("npi")?;
    let ok = npi
        .as_str()
        .is_some_and(|s| s.len() == 10 && s.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        return None;
    }
    let help = if npi.is_number() {
        format!("quote it: npi: \"{npi}\" (unquoted, YAML reads it as a number)")
    } else {
        "write the member's 10-digit NPI in quotes, e.g. npi: \"1234567890\"".to_owned()
    };
    Some(("NPI must be a string of 10 digits".to_owned(), help))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_words_are_suggested_and_far_ones_are_not() {
        assert_eq!(closest("Teem", ["Team", "Role", "Values"]), Some("Team"));
        assert_eq!(
            closest("displayNam", ["displayName", "members"]),
            Some("displayName")
        );
        assert_eq!(closest("zzzz", ["Team", "Role"]), None);
        assert_eq!(
            did_you_mean("\"COORDINATE_REFERALS_FOR_PATIENT\" is not one of the allowed values: PROCESS_REFILL_REQUESTS, COORDINATE_REFERRALS_FOR_PATIENT").as_deref(),
            Some("did you mean 'COORDINATE_REFERRALS_FOR_PATIENT'?")
        );
        assert_eq!(
            did_you_mean(
                "Additional properties are not allowed ('responsibilites' was unexpected)"
            )
            .as_deref(),
            Some("did you mean 'responsibilities'?")
        );
    }

    #[test]
    fn an_unquoted_npi_gets_a_sentence() {
        let v = serde_json::json!({"npi": 1234567890u64});
        let (msg, help) = npi_message(Some(&v)).unwrap();
        assert_eq!(msg, "NPI must be a string of 10 digits");
        assert!(help.contains("npi: \"1234567890\""));
        assert!(npi_message(Some(&serde_json::json!({"npi": "1234567890"}))).is_none());
        assert!(npi_message(Some(&serde_json::json!({"email": "a@b.org"}))).is_none());
    }
}
