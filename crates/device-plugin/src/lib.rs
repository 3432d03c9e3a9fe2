//! device-plugin
