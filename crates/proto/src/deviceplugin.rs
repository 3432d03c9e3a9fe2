//! Kubelet device plugin API v1beta1.
#![allow(missing_docs, clippy::all)]
tonic::include_proto!("v1beta1");
