//! The one error type for every gpupack document format.

use serde::de::DeserializeOwned;

/// Why a gpupack document (inventory, assignment, annotations) was rejected.
/// Every variant names the document and the field, so a user can find it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not valid JSON, a missing field or a value of the wrong type.
    #[error("{document}: {path}: {message}")]
    Syntax {
        /// Which document: "inventory", "assignment", ...
        document: &'static str,
        /// Where in it (`.` for the top level).
        path: String,
        /// What the parser said.
        message: String,
    },
    /// A version this build does not read.
    #[error("{document}: {field}: unsupported version {found:?}; this build reads {expected:?}")]
    Version {
        /// Which document.
        document: &'static str,
        /// The field carrying the version.
        field: &'static str,
        /// The version found.
        found: String,
        /// The version understood.
        expected: &'static str,
    },
    /// Well-formed, but a value breaks a rule of the format.
    #[error("{document}: {field}: {problem}")]
    Invalid {
        /// Which document.
        document: &'static str,
        /// Path of the offending field, e.g. `gpus[2].memoryBytes`.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

impl FormatError {
    pub(crate) fn invalid(
        document: &'static str,
        field: impl Into<String>,
        problem: impl Into<String>,
    ) -> FormatError {
        FormatError::Invalid {
            document,
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Deserializes JSON, reporting the path of the field that failed.
pub(crate) fn from_json<T: DeserializeOwned>(
    document: &'static str,
    text: &str,
) -> Result<T, FormatError> {
    let mut de = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| FormatError::Syntax {
        document,
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}
