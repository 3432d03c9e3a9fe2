//! Every contract between gpupack's parts.
pub mod deviceplugin;
