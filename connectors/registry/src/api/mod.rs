//! The registry's HTTP resources, one router per resource as in Confluent's API reference:
//! subjects, schemas (by id), config (compatibility levels) and compatibility checks.

pub(super) mod compatibility;
pub(super) mod config;
pub(super) mod schemas;
pub(super) mod subjects;

use serde::Serialize;

/// `{"subject", "id", "version", "schema"}`: a version as Confluent returns it.
#[derive(Debug, Serialize)]
pub(super) struct VersionBody {
    subject: String,
    id: i32,
    version: i32,
    schema: String,
}

impl From<super::SubjectVersion> for VersionBody {
    fn from(v: super::SubjectVersion) -> Self {
        Self {
            subject: v.subject,
            id: v.id,
            version: v.version,
            schema: v.schema,
        }
    }
}
