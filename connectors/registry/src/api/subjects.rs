//! `/subjects/...`: register, look up, list and delete the versions of a subject.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::VersionBody;
use crate::http::{
    DeletedParam, JsonBody, Params, PathParams, PermanentParam, SrJson, VersionSelector, flag, raw,
    validate_subject,
};
use crate::schema::{ParsedSchema, SchemaRequest};
use crate::{RegistryError, RegistryState};

pub(crate) fn router() -> Router<RegistryState> {
    Router::new()
        .route("/subjects", get(list))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .route(
            "/subjects/{subject}/versions/{version}/referencedby",
            get(referenced_by),
        )
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    #[serde(default, deserialize_with = "flag")]
    deleted: bool,
    #[serde(default)]
    subject_prefix: String,
}

async fn list(
    State(state): State<RegistryState>,
    Params(params): Params<ListParams>,
) -> Result<SrJson<Vec<String>>, RegistryError> {
    let subjects = state
        .store()
        .subjects(params.deleted, &params.subject_prefix)
        .await?;
    Ok(SrJson(subjects))
}

#[derive(Debug, Serialize)]
struct IdBody {
    id: i32,
}

async fn register(
    State(state): State<RegistryState>,
    PathParams(subject): PathParams<String>,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> Result<SrJson<IdBody>, RegistryError> {
    validate_subject(&subject)?;
    let schema = ParsedSchema::from_request(&request)?;
    let registration = state.store().register(&subject, &schema).await?;
    Ok(SrJson(IdBody {
        id: registration.id,
    }))
}

async fn lookup(
    State(state): State<RegistryState>,
    PathParams(subject): PathParams<String>,
    Params(params): Params<DeletedParam>,
    JsonBody(request): JsonBody<SchemaRequest>,
) -> Result<SrJson<VersionBody>, RegistryError> {
    validate_subject(&subject)?;
    let schema = ParsedSchema::from_request(&request)?;
    let found = state
        .store()
        .lookup(&subject, &schema, params.deleted)
        .await?;
    Ok(SrJson(found.into()))
}

async fn versions(
    State(state): State<RegistryState>,
    PathParams(subject): PathParams<String>,
    Params(params): Params<DeletedParam>,
) -> Result<SrJson<Vec<i32>>, RegistryError> {
    Ok(SrJson(
        state.store().versions(&subject, params.deleted).await?,
    ))
}

async fn version(
    State(state): State<RegistryState>,
    PathParams((subject, version)): PathParams<(String, String)>,
    Params(params): Params<DeletedParam>,
) -> Result<SrJson<VersionBody>, RegistryError> {
    let selector = VersionSelector::parse(&version)?;
    let found = state
        .store()
        .version(&subject, selector, params.deleted)
        .await?;
    Ok(SrJson(found.into()))
}

/// The schema text alone, as registered (it is JSON already).
async fn version_schema(
    State(state): State<RegistryState>,
    PathParams((subject, version)): PathParams<(String, String)>,
    Params(params): Params<DeletedParam>,
) -> Result<Response, RegistryError> {
    let selector = VersionSelector::parse(&version)?;
    let found = state
        .store()
        .version(&subject, selector, params.deleted)
        .await?;
    Ok(raw(found.schema))
}

/// Schema references are not supported, so nothing ever references a version; the endpoint
/// still answers (after checking the version exists) because tools call it before deleting.
async fn referenced_by(
    State(state): State<RegistryState>,
    PathParams((subject, version)): PathParams<(String, String)>,
) -> Result<SrJson<Vec<i32>>, RegistryError> {
    let selector = VersionSelector::parse(&version)?;
    state.store().version(&subject, selector, true).await?;
    Ok(SrJson(Vec::new()))
}

async fn delete_subject(
    State(state): State<RegistryState>,
    PathParams(subject): PathParams<String>,
    Params(params): Params<PermanentParam>,
) -> Result<SrJson<Vec<i32>>, RegistryError> {
    Ok(SrJson(
        state
            .store()
            .delete_subject(&subject, params.permanent)
            .await?,
    ))
}

async fn delete_version(
    State(state): State<RegistryState>,
    PathParams((subject, version)): PathParams<(String, String)>,
    Params(params): Params<PermanentParam>,
) -> Result<SrJson<i32>, RegistryError> {
    let selector = VersionSelector::parse(&version)?;
    Ok(SrJson(
        state
            .store()
            .delete_version(&subject, selector, params.permanent)
            .await?,
    ))
}
