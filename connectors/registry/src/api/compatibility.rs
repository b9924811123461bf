//! `/compatibility/...`: would this schema be accepted? Same rules as registration, no writes.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde::{Deserialize, Serialize};

use crate::http::{JsonBody, Params, PathParams, SrJson, VersionSelector, flag};
use crate::schema::{ParsedSchema, SchemaRequest};
use crate::{RegistryError, RegistryState};

pub(crate) fn router() -> Router<RegistryState> {
    Router::new()
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(check_version),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(check_all),
        )
}

#[derive(Debug, Default, Deserialize)]
struct VerboseParam {
    #[serde(default, deserialize_with = "flag")]
    verbose: bool,
}

#[derive(Debug, Serialize)]
struct CheckBody {
    is_compatible: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    messages: Option<Vec<String>>,
}

impl CheckBody {
    fn new(messages: Vec<String>, verbose: bool) -> Self {
        Self {
            is_compatible: messages.is_empty(),
            messages: verbose.then_some(messages),
        }
    }
}

/// Against one version, or `latest` (all live versions under a transitive level).
async fn check_version(
    State(state): State<RegistryState>,
    PathParams((subject, version)): PathParams<(String, String)>,
    Params(params): Params<VerboseParam>,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> Result<SrJson<CheckBody>, RegistryError> {
    let selector = VersionSelector::parse(&version)?;
    let schema = ParsedSchema::from_request(&request)?;
    let messages = state
        .store()
        .check_compatibility(&subject, &schema, Some(selector))
        .await?;
    Ok(SrJson(CheckBody::new(messages, params.verbose)))
}

/// Against every version the subject's level covers; an unknown subject is compatible.
async fn check_all(
    State(state): State<RegistryState>,
    PathParams(subject): PathParams<String>,
    Params(params): Params<VerboseParam>,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> Result<SrJson<CheckBody>, RegistryError> {
    let schema = ParsedSchema::from_request(&request)?;
    let messages = state
        .store()
        .check_compatibility(&subject, &schema, None)
        .await?;
    Ok(SrJson(CheckBody::new(messages, params.verbose)))
}
