//! Readable differences between two JSON values, field by field, for
//! `ferry reconcile` and `ferry test`. Pure.

use std::fmt::Write as _;

use serde_json::Value;

/// One place where two values differ: a jq-like path (`.items[2].qty`)
/// and what each side has there (`None`: the field is missing).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Difference {
    pub path: String,
    pub left: Option<Value>,
    pub right: Option<Value>,
}

/// Every leaf where `left` and `right` differ, in field order, at most
/// `limit` of them.
pub(crate) fn differences(left: &Value, right: &Value, limit: usize) -> Vec<Difference> {
    let mut out = Vec::new();
    walk(String::new(), Some(left), Some(right), limit, &mut out);
    out
}

fn walk(
    path: String,
    left: Option<&Value>,
    right: Option<&Value>,
    limit: usize,
    out: &mut Vec<Difference>,
) {
    if out.len() >= limit {
        return;
    }
    match (left, right) {
        (Some(Value::Object(l)), Some(Value::Object(r))) => {
            for (k, lv) in l {
                walk(field(&path, k), Some(lv), r.get(k), limit, out);
            }
            for (k, rv) in r.iter().filter(|(k, _)| !l.contains_key(*k)) {
                walk(field(&path, k), None, Some(rv), limit, out);
            }
        }
        (Some(Value::Array(l)), Some(Value::Array(r))) => {
            for i in 0..l.len().max(r.len()) {
                walk(format!("{path}[{i}]"), l.get(i), r.get(i), limit, out);
            }
        }
        (l, r) if !same(l, r) => out.push(Difference {
            path: if path.is_empty() {
                ".".to_owned()
            } else {
                path
            },
            left: l.cloned(),
            right: r.cloned(),
        }),
        _ => {}
    }
}

/// Equal, counting `1` and `1.0` as the same number.
fn same(l: Option<&Value>, r: Option<&Value>) -> bool {
    match (l, r) {
        (Some(Value::Number(a)), Some(Value::Number(b))) => a == b || a.as_f64() == b.as_f64(),
        (l, r) => l == r,
    }
}

/// Whether two values are equal by [`differences`]' measure.
pub(crate) fn equal(left: &Value, right: &Value) -> bool {
    differences(left, right, 1).is_empty()
}

fn field(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !key.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        format!("{path}.{key}")
    } else {
        let at = if path.is_empty() { "." } else { path };
        format!("{at}[{}]", Value::String(key.to_owned()))
    }
}

/// `.status: "paid" → "refunded"`, one line per difference, each line
/// starting with `indent`; `left`/`right` name the sides.
pub(crate) fn render(diffs: &[Difference], indent: &str, left: &str, right: &str) -> String {
    let show = |v: &Option<Value>| match v {
        Some(v) => v.to_string(),
        None => "(missing)".to_owned(),
    };
    let mut s = String::new();
    for d in diffs {
        let _ = writeln!(
            s,
            "{indent}{}: {left} {}, {right} {}",
            d.path,
            show(&d.left),
            show(&d.right)
        );
    }
    s
}

/// JSON with object keys sorted at every level: one spelling per value,
/// so that equal values compare (and sort) equal as text.
pub(crate) fn canonical(value: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&m[k])))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differences_name_the_path_and_both_values() {
        let l = json!({"id": "o1", "status": "paid", "items": [{"qty": 2}], "at": 1});
        let r = json!({"id": "o1", "status": "refunded", "items": [{"qty": 3}, {"qty": 1}], "new": true, "at": 1.0});
        let d = differences(&l, &r, 10);
        let paths: Vec<&str> = d.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, [".status", ".items[0].qty", ".items[1]", ".new"]);
        assert_eq!(d[2].left, None);
        let text = render(&d[..1], "  ", "left", "right");
        assert_eq!(text, "  .status: left \"paid\", right \"refunded\"\n");
        assert_eq!(differences(&l, &r, 2).len(), 2, "limited");
    }

    #[test]
    fn odd_field_names_are_quoted_and_scalars_compare_at_the_root() {
        let d = differences(&json!({"a b": 1}), &json!({"a b": 2}), 10);
        assert_eq!(d[0].path, ".[\"a b\"]");
        let d = differences(&json!("x"), &json!(1), 10);
        assert_eq!(d[0].path, ".");
        assert!(equal(
            &json!({"a": [1, {"b": null}]}),
            &json!({"a": [1, {"b": null}]})
        ));
    }

    #[test]
    fn canonical_json_does_not_depend_on_field_order() {
        let a: Value = serde_json::from_str(r#"{"b":1,"a":{"d":2,"c":3}}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":{"c":3,"d":2},"b":1}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_eq!(canonical(&a), r#"{"a":{"c":3,"d":2},"b":1}"#);
    }
}
