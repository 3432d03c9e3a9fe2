//! Kubeconfig files pointing at the stand-in, and clients built from them
//! through kube's ordinary kubeconfig loading (the path every gpupack
//! binary takes when `KUBECONFIG` is set).

use std::path::Path;

use kube::config::{
    AuthInfo, Cluster, Context, KubeConfigOptions, Kubeconfig, NamedAuthInfo, NamedCluster,
    NamedContext,
};

use crate::error::Error;

const NAME: &str = "standin";

/// A kubeconfig with one cluster (`server: url`, plain HTTP), one user (a
/// bearer token that the stand-in records as the user of each request, so
/// tests can tell components apart, or none) and one current context with
/// namespace `default`.
pub fn config(url: &str, token: Option<&str>) -> Kubeconfig {
    Kubeconfig {
        clusters: vec![NamedCluster {
            name: NAME.into(),
            cluster: Some(Cluster {
                server: Some(url.into()),
                ..Cluster::default()
            }),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: NAME.into(),
            auth_info: Some(AuthInfo {
                token: token.map(|t| secrecy::SecretString::from(t.to_string())),
                ..AuthInfo::default()
            }),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: NAME.into(),
            context: Some(Context {
                cluster: NAME.into(),
                user: Some(NAME.into()),
                namespace: Some("default".into()),
                ..Context::default()
            }),
            other: Default::default(),
        }],
        current_context: Some(NAME.into()),
        kind: Some("Config".into()),
        api_version: Some("v1".into()),
        ..Kubeconfig::default()
    }
}

/// [`config`] as a file's text. JSON, which every kubeconfig reader takes
/// (YAML is a superset).
pub fn text(url: &str, token: Option<&str>) -> Result<String, Error> {
    serde_json::to_string_pretty(&config(url, token)).map_err(Error::SerializeKubeconfig)
}

/// Writes [`config`] to `path`.
pub fn write(path: &Path, url: &str, token: Option<&str>) -> Result<(), Error> {
    std::fs::write(path, text(url, token)?).map_err(|source| Error::WriteKubeconfig {
        path: path.display().to_string(),
        source,
    })
}

/// Loads a kubeconfig file and builds a client from its current context.
pub async fn client_from_file(path: &Path) -> Result<kube::Client, Error> {
    let kc = Kubeconfig::read_from(path)?;
    client_from(kc).await
}

/// Builds a client from a kubeconfig's current context, without kube's
/// default retry layer (as gpupack's components build theirs, and as
/// client-go behaves: a 429 or 5xx is the caller's to handle).
pub async fn client_from(kc: Kubeconfig) -> Result<kube::Client, Error> {
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn written_text_reads_back_as_the_same_kubeconfig() {
        let text = text("http://127.0.0.1:1234", Some("plugin-a")).unwrap();
        let back = Kubeconfig::from_yaml(&text).unwrap();
        assert_eq!(back.current_context.as_deref(), Some(NAME));
        assert_eq!(
            back.clusters[0].cluster.as_ref().unwrap().server.as_deref(),
            Some("http://127.0.0.1:1234")
        );
        let token = back.auth_infos[0]
            .auth_info
            .as_ref()
            .unwrap()
            .token
            .as_ref();
        assert_eq!(
            token.map(secrecy::ExposeSecret::expose_secret),
            Some("plugin-a")
        );
    }
}
