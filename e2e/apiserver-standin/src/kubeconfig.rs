//! Kubeconfig files pointing at the stand-in, and clients built from them
//! through kube's ordinary kubeconfig loading (the path every gpupack
//! binary takes when `KUBECONFIG` is set).

use std::path::Path;

use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::server::Error;

/// A kubeconfig with one cluster (`server: url`, plain HTTP, no auth) and
/// one context, current, with namespace `default`.
pub fn yaml(url: &str) -> String {
    yaml_with_token(url, None)
}

/// Like [`yaml`], with a bearer token that the stand-in records as the
/// user of each request, so tests can tell components apart.
pub fn yaml_with_token(url: &str, token: Option<&str>) -> String {
    let user = match token {
        Some(t) => format!("{{token: {t:?}}}"),
        None => "{}".to_string(),
    };
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: standin
  cluster:
    server: {url}
users:
- name: standin
  user: {user}
contexts:
- name: standin
  context:
    cluster: standin
    user: standin
    namespace: default
current-context: standin
"
    )
}

/// Writes [`yaml`] to `path`.
pub fn write(path: &Path, url: &str) -> Result<(), Error> {
    write_with_token(path, url, None)
}

/// Writes [`yaml_with_token`] to `path`.
pub fn write_with_token(path: &Path, url: &str, token: Option<&str>) -> Result<(), Error> {
    std::fs::write(path, yaml_with_token(url, token)).map_err(|source| Error::WriteKubeconfig {
        path: path.display().to_string(),
        source,
    })
}

/// Loads a kubeconfig file and builds a client from its current context.
pub async fn client_from_file(path: &Path) -> Result<kube::Client, Error> {
    let kc = Kubeconfig::read_from(path)?;
    client_from(kc).await
}

pub(crate) async fn client_from_yaml(yaml: &str) -> Result<kube::Client, Error> {
    client_from(Kubeconfig::from_yaml(yaml)?).await
}

async fn client_from(kc: Kubeconfig) -> Result<kube::Client, Error> {
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(kube::Client::try_from(config)?)
}
