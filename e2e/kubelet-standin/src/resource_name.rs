//! kubelet's test for an extended resource name (`v1helper.IsExtendedResourceName`),
//! which `Register` applies to every plugin's resource name.

/// Whether `name` is an extended resource name as kubelet defines it: not a
/// native resource (it has a `/` and does not contain `kubernetes.io/`), not
/// starting with `requests.`, and `requests.<name>` is a qualified name
/// (`<DNS-1123 subdomain>/<name part>`).
pub fn is_extended_resource_name(name: &str) -> bool {
    if !name.contains('/') || name.contains("kubernetes.io/") || name.starts_with("requests.") {
        return false;
    }
    is_qualified_name(&format!("requests.{name}"))
}

/// `validation.IsQualifiedName`: an optional DNS-1123 subdomain prefix and a
/// name part of at most 63 characters.
fn is_qualified_name(value: &str) -> bool {
    let (prefix, name) = match value.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, value),
    };
    if name.contains('/') {
        return false;
    }
    prefix.is_none_or(is_dns1123_subdomain) && is_qualified_name_part(name)
}

fn is_qualified_name_part(name: &str) -> bool {
    let bytes = name.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    name.len() <= 63
        && first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(is_dns1123_label)
}

fn is_dns1123_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_domain_qualified_names() {
        for name in [
            "gpupack.io/gpu",
            "gpupack.io/gpu-memory",
            "gpupack.io/mig-1g.10gb",
            "gpupack.io/mig-1g.10gb.me",
            "nvidia.com/gpu",
            "example.com/Foo_bar",
        ] {
            assert!(is_extended_resource_name(name), "{name}");
        }
    }

    #[test]
    fn rejects_native_unqualified_and_malformed_names() {
        for name in [
            "gpu",
            "cpu",
            "kubernetes.io/gpu",
            "example.kubernetes.io/gpu",
            "requests.example.com/gpu",
            "Example.com/gpu",
            "example.com/",
            "/gpu",
            "example.com/gpu/extra",
            "example.com/-gpu",
            "exa_mple.com/gpu",
            "",
        ] {
            assert!(!is_extended_resource_name(name), "{name}");
        }
        let long = format!("example.com/{}", "a".repeat(64));
        assert!(!is_extended_resource_name(&long));
    }
}
