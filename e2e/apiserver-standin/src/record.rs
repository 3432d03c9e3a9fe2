//! A record of every API request (verb, path, status) for tests to assert on.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

/// One request as the server answered it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestRecord {
    pub method: String,
    pub path: String,
    /// Who asked: the bearer token the client sent, which the stand-in takes
    /// as the user name (give each component its own kubeconfig token);
    /// empty for an anonymous request.
    pub user: String,
    /// API group of the resource (`""` for the core group).
    pub group: String,
    pub query: String,
    /// The Kubernetes verb: get, list, watch, create, update, patch,
    /// delete, deletecollection, or `other` for discovery and unknown URLs.
    pub verb: String,
    /// Plural resource name (`pods`), with `/subresource` where one was
    /// addressed (`pods/binding`, `pods/status`).
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub status: u16,
    /// The answer came from fault injection, not from the store.
    pub injected: bool,
}

/// The request log; cheap to clone, shared with the server.
#[derive(Clone, Default)]
pub struct RequestLog(Arc<Mutex<Vec<RequestRecord>>>);

impl RequestLog {
    fn lock(&self) -> MutexGuard<'_, Vec<RequestRecord>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, r: RequestRecord) {
        self.lock().push(r);
    }

    /// Every request so far, oldest first.
    pub fn all(&self) -> Vec<RequestRecord> {
        self.lock().clone()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Requests with this verb on this resource (e.g. `("create", "pods/binding")`).
    pub fn count(&self, verb: &str, resource: &str) -> usize {
        self.lock()
            .iter()
            .filter(|r| r.verb == verb && r.resource == resource)
            .count()
    }

    /// Requests matching `f`.
    pub fn count_where(&self, f: impl Fn(&RequestRecord) -> bool) -> usize {
        self.lock().iter().filter(|r| f(r)).count()
    }
}
