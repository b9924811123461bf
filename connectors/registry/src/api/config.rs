//! `/config` and `/config/{subject}`: compatibility levels, global and per subject.
//!
//! GET answers `{"compatibilityLevel": ...}` while PUT takes and answers `{"compatibility": ...}`,
//! an asymmetry of Confluent's API that clients rely on.

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::compatibility::CompatibilityLevel;
use crate::http::{JsonBody, Params, PathParams, SrJson, flag, validate_subject};
use crate::{RegistryError, RegistryState};

pub(crate) fn router() -> Router<RegistryState> {
    Router::new()
        .route(
            "/config",
            get(get_global).put(put_global).delete(delete_global),
        )
        .route(
            "/config/{subject}",
            get(get_subject).put(put_subject).delete(delete_subject),
        )
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct LevelBody {
    compatibility_level: CompatibilityLevel,
}

#[derive(Debug, Serialize)]
struct UpdatedBody {
    compatibility: CompatibilityLevel,
}

/// The PUT body. Other members (`normalize`, `alias`, ...) are ignored.
#[derive(Debug, Deserialize)]
struct UpdateRequest {
    #[serde(default, alias = "compatibilityLevel")]
    compatibility: Option<String>,
}

impl UpdateRequest {
    fn level(&self) -> Result<CompatibilityLevel, RegistryError> {
        match &self.compatibility {
            Some(level) => level.parse(),
            None => Err(RegistryError::InvalidCompatibilityLevel(
                "(missing)".to_owned(),
            )),
        }
    }
}

async fn get_global(
    State(state): State<RegistryState>,
) -> Result<SrJson<LevelBody>, RegistryError> {
    let compatibility_level = state.store().global_level().await?;
    Ok(SrJson(LevelBody {
        compatibility_level,
    }))
}

async fn put_global(
    State(state): State<RegistryState>,
    JsonBody(request): JsonBody<UpdateRequest>,
) -> Result<SrJson<UpdatedBody>, RegistryError> {
    let compatibility = request.level()?;
    state.store().set_global_level(compatibility).await?;
    Ok(SrJson(UpdatedBody { compatibility }))
}

/// Resets the global level to the default and answers with the level it replaced.
async fn delete_global(
    State(state): State<RegistryState>,
) -> Result<SrJson<LevelBody>, RegistryError> {
    let compatibility_level = state.store().reset_global_level().await?;
    Ok(SrJson(LevelBody {
        compatibility_level,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetParams {
    #[serde(default, deserialize_with = "flag")]
    default_to_global: bool,
}

async fn get_subject(
    State(state): State<RegistryState>,
    PathParams(subject): PathParams<String>,
    Params(params): Params<GetParams>,
) -> Result<SrJson<LevelBody>, RegistryError> {
    let compatibility_level = match state.store().subject_level(&subject).await? {
        Some(level) => level,
        None if params.default_to_global => state.store().global_level().await?,
        None => return Err(RegistryError::SubjectConfigNotFound(subject)),
    };
    Ok(SrJson(LevelBody {
        compatibility_level,
    }))
}

async fn put_subject(
    State(state): State<RegistryState>,
    PathParams(subject): PathParams<String>,
    JsonBody(request): JsonBody<UpdateRequest>,
) -> Result<SrJson<UpdatedBody>, RegistryError> {
    validate_subject(&subject)?;
    let compatibility = request.level()?;
    state
        .store()
        .set_subject_level(&subject, compatibility)
        .await?;
    Ok(SrJson(UpdatedBody { compatibility }))
}

/// Removes the subject's own level and answers with it; the subject then follows the global one.
async fn delete_subject(
    State(state): State<RegistryState>,
    PathParams(subject): PathParams<String>,
) -> Result<SrJson<LevelBody>, RegistryError> {
    match state.store().delete_subject_level(&subject).await? {
        Some(compatibility_level) => Ok(SrJson(LevelBody {
            compatibility_level,
        })),
        None => Err(RegistryError::SubjectConfigNotFound(subject)),
    }
}
