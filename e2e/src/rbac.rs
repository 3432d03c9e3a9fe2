//! RBAC derived from behaviour: every API call a component made during a
//! run, checked against the rules the manifests give that component.

use std::collections::BTreeSet;

use apiserver_standin::RequestRecord;
use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef, Subject};

use crate::manifests::Object;

/// One kind of API call: what an RBAC rule has to allow.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sub = self
            .subresource
            .as_deref()
            .map(|s| format!("/{s}"))
            .unwrap_or_default();
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(f, "{} {group} {}{sub}", self.verb, self.resource)?;
        if let Some(ns) = &self.namespace {
            write!(f, " in {ns}")?;
        }
        Ok(())
    }
}

/// The distinct API calls `user` made (discovery and unknown paths left out).
pub fn calls_of(records: &[RequestRecord], user: &str) -> BTreeSet<Call> {
    records
        .iter()
        .filter(|r| r.user == user && r.verb != "other" && !r.resource.is_empty())
        .map(|r| {
            let (resource, sub) = match r.resource.split_once('/') {
                Some((res, sub)) => (res.to_string(), Some(sub.to_string())),
                None => (r.resource.clone(), None),
            };
            Call {
                verb: r.verb.clone(),
                group: r.group.clone(),
                resource,
                subresource: sub,
                namespace: r.namespace.clone(),
            }
        })
        .collect()
}

/// Whether one of `rules` (of a ClusterRole) allows `call`.
pub fn allowed(rules: &[PolicyRule], call: &Call) -> bool {
    let resource = match &call.subresource {
        Some(s) => format!("{}/{s}", call.resource),
        None => call.resource.clone(),
    };
    rules.iter().any(|r| {
        r.api_groups.iter().flatten().any(|g| *g == call.group)
            && r.resources.iter().flatten().any(|x| *x == resource)
            && r.verbs.contains(&call.verb)
    })
}

/// A rule granted to a service account: cluster-wide through a
/// ClusterRoleBinding, or in one namespace through a RoleBinding.
#[derive(Clone, Debug)]
pub struct Grant {
    /// The namespace a RoleBinding limits the rule to.
    pub namespace: Option<String>,
    pub rule: PolicyRule,
}

/// What the manifests grant ServiceAccount `namespace/name`: the rules of
/// every role among `objects` bound to it (built-in roles such as
/// `system:kube-scheduler` are not among them).
pub fn grants_of(objects: &[Object], namespace: &str, name: &str) -> Vec<Grant> {
    let is_subject = |subjects: &Option<Vec<Subject>>| {
        subjects.iter().flatten().any(|s| {
            s.kind == "ServiceAccount"
                && s.name == name
                && s.namespace.as_deref() == Some(namespace)
        })
    };
    let role_rules = |role_ref: &RoleRef, binding_namespace: Option<&str>| -> Vec<PolicyRule> {
        objects
            .iter()
            .filter_map(|o| match o {
                Object::ClusterRole(r)
                    if role_ref.kind == "ClusterRole"
                        && r.metadata.name.as_deref() == Some(&role_ref.name) =>
                {
                    r.rules.clone()
                }
                Object::Role(r)
                    if role_ref.kind == "Role"
                        && r.metadata.name.as_deref() == Some(&role_ref.name)
                        && r.metadata.namespace.as_deref() == binding_namespace =>
                {
                    r.rules.clone()
                }
                _ => None,
            })
            .flatten()
            .collect()
    };
    let mut out = Vec::new();
    for o in objects {
        let (binding_namespace, role_ref) = match o {
            Object::ClusterRoleBinding(b) if is_subject(&b.subjects) => (None, &b.role_ref),
            Object::RoleBinding(b) if is_subject(&b.subjects) => {
                (b.metadata.namespace.as_deref(), &b.role_ref)
            }
            _ => continue,
        };
        for rule in role_rules(role_ref, binding_namespace) {
            out.push(Grant {
                namespace: binding_namespace.map(String::from),
                rule,
            });
        }
    }
    out
}

/// Whether the grants allow `call`; a namespaced grant only allows calls in
/// its namespace.
pub fn permitted(grants: &[Grant], call: &Call) -> bool {
    grants.iter().any(|g| {
        (g.namespace.is_none() || g.namespace == call.namespace)
            && allowed(std::slice::from_ref(&g.rule), call)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> PolicyRule {
        PolicyRule {
            api_groups: Some(groups.iter().map(|s| s.to_string()).collect()),
            resources: Some(resources.iter().map(|s| s.to_string()).collect()),
            verbs: verbs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn call(verb: &str, group: &str, resource: &str, sub: Option<&str>) -> Call {
        Call {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.map(String::from),
            namespace: None,
        }
    }

    #[test]
    fn subresources_need_their_own_rule() {
        let rules = [rule(&[""], &["pods"], &["get", "create"])];
        assert!(allowed(&rules, &call("get", "", "pods", None)));
        assert!(!allowed(
            &rules,
            &call("create", "", "pods", Some("binding"))
        ));
        assert!(!allowed(&rules, &call("get", "apps", "pods", None)));
        assert!(!allowed(&rules, &call("watch", "", "pods", None)));
        let rules = [rule(&[""], &["pods/binding"], &["create"])];
        assert!(allowed(
            &rules,
            &call("create", "", "pods", Some("binding"))
        ));
    }
}
