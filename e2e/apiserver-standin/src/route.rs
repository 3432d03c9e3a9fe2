//! Turns a request line into what it addresses: group/version, namespace,
//! resource, name, subresource, and the Kubernetes verb.

use http::Method;

/// An API path, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `/api`, `/apis`, `/apis/{group}`, `/api/v1`, `/apis/{g}/{v}`.
    Discovery {
        group: Option<String>,
        version: Option<String>,
    },
    /// A resource collection, object or subresource.
    Resource(ResourcePath),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl ResourcePath {
    /// `pods` or `pods/status`, as the request log names it.
    pub fn resource_label(&self) -> String {
        match &self.subresource {
            Some(s) => format!("{}/{s}", self.plural),
            None => self.plural.clone(),
        }
    }
}

/// Parses an API path; `None` for paths outside `/api` and `/apis`.
pub fn parse(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api"] => {
            return Some(Target::Discovery {
                group: None,
                version: None,
            });
        }
        ["apis"] => {
            return Some(Target::Discovery {
                group: Some(String::new()),
                version: None,
            });
        }
        ["api", v, rest @ ..] => (String::new(), v.to_string(), rest),
        ["apis", g] => {
            return Some(Target::Discovery {
                group: Some(g.to_string()),
                version: None,
            });
        }
        ["apis", g, v, rest @ ..] => (g.to_string(), v.to_string(), rest),
        _ => return None,
    };
    let own = |s: &&str| s.to_string();
    let (namespace, rest) = match rest {
        // `namespaces/{name}/status` and `/finalize` are the namespace's own subresources.
        ["namespaces", ns, plural, tail @ ..] if *plural != "status" && *plural != "finalize" => (
            Some(ns.to_string()),
            std::iter::once(*plural)
                .chain(tail.iter().copied())
                .collect::<Vec<_>>(),
        ),
        other => (None, other.to_vec()),
    };
    let target = match rest.as_slice() {
        [] => Target::Discovery {
            group: Some(group),
            version: Some(version),
        },
        [plural] => resource(group, version, namespace, own(plural), None, None),
        [plural, name] => resource(
            group,
            version,
            namespace,
            own(plural),
            Some(own(name)),
            None,
        ),
        [plural, name, sub] => resource(
            group,
            version,
            namespace,
            own(plural),
            Some(own(name)),
            Some(own(sub)),
        ),
        _ => return None,
    };
    Some(target)
}

fn resource(
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    subresource: Option<String>,
) -> Target {
    Target::Resource(ResourcePath {
        group,
        version,
        namespace,
        plural,
        name,
        subresource,
    })
}

/// The Kubernetes verb for a method on a path.
pub fn verb(method: &Method, p: &ResourcePath, watch: bool) -> &'static str {
    match (method.as_str(), p.name.is_some()) {
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("GET", true) => "get",
        ("POST", _) => "create",
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "other",
    }
}

/// Whether a verb changes state (the ones conflict injection hits).
pub fn is_write(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rp(path: &str) -> ResourcePath {
        match parse(path) {
            Some(Target::Resource(r)) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn core_and_group_paths() {
        let r = rp("/api/v1/namespaces/ml/pods/p1/binding");
        assert_eq!(
            (
                r.group.as_str(),
                r.namespace.as_deref(),
                r.plural.as_str(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("", Some("ml"), "pods", Some("p1"), Some("binding"))
        );
        let r = rp("/apis/gpupack.io/v1/gpunodeinventories/node-a");
        assert_eq!(
            (
                r.group.as_str(),
                r.version.as_str(),
                r.namespace,
                r.name.as_deref()
            ),
            ("gpupack.io", "v1", None, Some("node-a"))
        );
        let r = rp("/api/v1/pods");
        assert_eq!((r.namespace, r.name), (None, None));
        let r = rp("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases");
        assert_eq!(r.namespace.as_deref(), Some("kube-system"));
    }

    #[test]
    fn namespaces_themselves() {
        let r = rp("/api/v1/namespaces");
        assert_eq!((r.plural.as_str(), r.name), ("namespaces", None));
        let r = rp("/api/v1/namespaces/ml");
        assert_eq!(
            (r.plural.as_str(), r.name.as_deref(), r.namespace),
            ("namespaces", Some("ml"), None)
        );
        let r = rp("/api/v1/namespaces/ml/status");
        assert_eq!(
            (r.plural.as_str(), r.subresource.as_deref()),
            ("namespaces", Some("status"))
        );
    }

    #[test]
    fn discovery_and_others() {
        assert_eq!(
            parse("/api"),
            Some(Target::Discovery {
                group: None,
                version: None
            })
        );
        assert_eq!(
            parse("/apis/gpupack.io/v1"),
            Some(Target::Discovery {
                group: Some("gpupack.io".into()),
                version: Some("v1".into())
            })
        );
        assert_eq!(parse("/healthz"), None);
        assert_eq!(parse("/api/v1/pods/a/b/c"), None);
    }

    #[test]
    fn verbs() {
        let coll = rp("/api/v1/pods");
        let obj = rp("/api/v1/namespaces/a/pods/b");
        assert_eq!(verb(&Method::GET, &coll, true), "watch");
        assert_eq!(verb(&Method::GET, &coll, false), "list");
        assert_eq!(verb(&Method::PUT, &obj, false), "update");
        assert_eq!(verb(&Method::DELETE, &coll, false), "deletecollection");
        assert!(is_write("patch") && !is_write("get"));
    }
}
