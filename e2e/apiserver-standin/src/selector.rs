//! Label and field selectors, parsed from the query string the way the real
//! API server reads them (`labels.Parse`, `fields.ParseSelector`).

use serde_json::Value;

use crate::error::ApiError;
use crate::resource::ResourceType;

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `labelSelector`; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for term in split_top_level(s) {
            let term = term.trim();
            if term.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(term).map_err(|why| {
                ApiError::bad_request(format!(
                    "unable to parse requirement {term:?} in labelSelector: {why}"
                ))
            })?);
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            // As in Kubernetes, `!=` and `notin` also match objects without the key.
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, set) => get(k).is_some_and(|v| set.iter().any(|s| s == v)),
            Requirement::NotIn(k, set) => !get(k).is_some_and(|v| set.iter().any(|s| s == v)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// Splits on commas outside parentheses (`a in (x,y),b=c`).
fn split_top_level(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    let key = |k: &str| -> Result<String, String> {
        let k = k.trim();
        if k.is_empty() || k.contains(char::is_whitespace) {
            Err(format!("invalid label key {k:?}"))
        } else {
            Ok(k.to_string())
        }
    };
    if let Some(rest) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(key(rest)?));
    }
    if let Some((head, tail)) = term.split_once('(') {
        let values = tail
            .trim_end()
            .strip_suffix(')')
            .ok_or("missing closing parenthesis")?;
        let values: Vec<String> = values
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect();
        let mut words = head.split_whitespace();
        let (k, op) = (words.next(), words.next());
        if words.next().is_some() {
            return Err("expected `key in (...)` or `key notin (...)`".into());
        }
        return match (k, op) {
            (Some(k), Some("in")) => Ok(Requirement::In(key(k)?, values)),
            (Some(k), Some("notin")) => Ok(Requirement::NotIn(key(k)?, values)),
            _ => Err("expected `key in (...)` or `key notin (...)`".into()),
        };
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(key(k)?, v.trim().to_string()));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(key(k)?, v.trim().to_string()));
    }
    Ok(Requirement::Exists(key(term)?))
}

/// A parsed `fieldSelector` (`a=b`, `a==b`, `a!=b`, comma-separated).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses and checks every label is supported for `rt` (400 otherwise,
    /// as the real API server answers `field label not supported`).
    pub fn parse(s: &str, rt: &ResourceType) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector term {term:?}: expected field=value or field!=value"
                )));
            };
            let field = field.trim().to_string();
            // Validate the label up front so a bad one fails the request, not the match.
            rt.field_value(&Value::Null, &field)?;
            terms.push((field, equal, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    pub fn matches(&self, rt: &ResourceType, obj: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let actual = rt.field_value(obj, field).unwrap_or_default();
            (actual == value.as_str()) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({"metadata": {"name": "x", "labels": labels}})
    }

    #[test]
    fn label_selector_operators() {
        let obj = labelled(json!({"app": "vllm", "tier": "gpu"}));
        let cases = [
            ("", true),
            ("app=vllm", true),
            ("app==vllm", true),
            ("app=other", false),
            ("app!=other", true),
            ("missing!=x", true),
            ("app in (a, vllm)", true),
            ("app notin (a,vllm)", false),
            ("missing notin (a)", true),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=vllm,tier in (gpu),!missing", true),
            ("app=vllm,tier=cpu", false),
        ];
        for (sel, want) in cases {
            let s = LabelSelector::parse(sel).unwrap();
            assert_eq!(s.matches(&obj), want, "{sel}");
        }
    }

    #[test]
    fn label_selector_rejects_garbage() {
        for bad in ["app in (a", "app within (a)", "=x", "a b"] {
            let e = LabelSelector::parse(bad).unwrap_err();
            assert_eq!(e.code, 400, "{bad}");
        }
    }

    #[test]
    fn field_selector_on_pods() {
        let pods = ResourceType::namespaced("", "v1", "pods", "Pod");
        let pod = json!({"metadata":{"name":"p","namespace":"ml"},"spec":{"nodeName":"n1"},"status":{"phase":"Pending"}});
        let m = |s: &str| FieldSelector::parse(s, &pods).unwrap().matches(&pods, &pod);
        assert!(m("spec.nodeName=n1"));
        assert!(!m("spec.nodeName=n2"));
        assert!(m("spec.nodeName!=n2,status.phase=Pending"));
        assert!(m("metadata.namespace=ml,metadata.name==p"));
        assert!(!m("spec.nodeName="));
        assert_eq!(
            FieldSelector::parse("spec.foo=1", &pods).unwrap_err().code,
            400
        );
        assert_eq!(
            FieldSelector::parse("nonsense", &pods).unwrap_err().code,
            400
        );
    }
}
