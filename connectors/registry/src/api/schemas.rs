//! `/schemas/...`: schemas by global id (what decoders fetch) and the supported types.

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use serde::Serialize;

use crate::http::{DeletedParam, Params, PathParams, SrJson, parse_schema_id, raw};
use crate::schema::AVRO;
use crate::{RegistryError, RegistryState};

pub(crate) fn router() -> Router<RegistryState> {
    Router::new()
        .route("/schemas/types", get(types))
        .route("/schemas/ids/{id}", get(by_id))
        .route("/schemas/ids/{id}/schema", get(raw_by_id))
        .route("/schemas/ids/{id}/versions", get(versions_of_id))
        .route("/schemas/ids/{id}/subjects", get(subjects_of_id))
}

async fn types() -> SrJson<[&'static str; 1]> {
    SrJson([AVRO])
}

/// Confluent leaves `schemaType` out for Avro; clients default to it.
#[derive(Debug, Serialize)]
struct SchemaBody {
    schema: String,
}

async fn by_id(
    State(state): State<RegistryState>,
    PathParams(id): PathParams<String>,
) -> Result<SrJson<SchemaBody>, RegistryError> {
    let schema = state.store().schema_by_id(parse_schema_id(&id)?).await?;
    Ok(SrJson(SchemaBody { schema }))
}

async fn raw_by_id(
    State(state): State<RegistryState>,
    PathParams(id): PathParams<String>,
) -> Result<Response, RegistryError> {
    let schema = state.store().schema_by_id(parse_schema_id(&id)?).await?;
    Ok(raw(schema))
}

#[derive(Debug, Serialize)]
struct SubjectVersionBody {
    subject: String,
    version: i32,
}

async fn versions_of_id(
    State(state): State<RegistryState>,
    PathParams(id): PathParams<String>,
    Params(params): Params<DeletedParam>,
) -> Result<SrJson<Vec<SubjectVersionBody>>, RegistryError> {
    let pairs = state
        .store()
        .versions_of_id(parse_schema_id(&id)?, params.deleted)
        .await?;
    Ok(SrJson(
        pairs
            .into_iter()
            .map(|(subject, version)| SubjectVersionBody { subject, version })
            .collect(),
    ))
}

async fn subjects_of_id(
    State(state): State<RegistryState>,
    PathParams(id): PathParams<String>,
    Params(params): Params<DeletedParam>,
) -> Result<SrJson<Vec<String>>, RegistryError> {
    let mut subjects: Vec<String> = state
        .store()
        .versions_of_id(parse_schema_id(&id)?, params.deleted)
        .await?
        .into_iter()
        .map(|(subject, _)| subject)
        .collect();
    subjects.dedup();
    Ok(SrJson(subjects))
}
