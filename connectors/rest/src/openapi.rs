//! The OpenAPI 3 document, generated from the handlers' annotations (utoipa), served at
//! `/openapi.json`, and a self-contained HTML page at `/docs` rendered from the same document
//! (no CDN scripts: the API must work where nothing can be downloaded).

use crate::state::AppState;
use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The document's root.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "tradestream API",
        description = "Manual orders, portfolio and history queries, live events and the kill switch of a tradestream deployment. \
            Authenticate with `Authorization: Bearer <JWT>` (HS256 from `tradestream token`, or RS256 from your identity provider). \
            Scopes: orders:write, orders:read, portfolio:read, admin. Errors are RFC 7807 application/problem+json."
    ),
    paths(
        crate::orders::place_order,
        crate::orders::list_orders,
        crate::orders::get_order,
        crate::orders::cancel_order,
        crate::portfolio::positions,
        crate::portfolio::portfolio,
        crate::portfolio::stats,
        crate::portfolio::fills,
        crate::portfolio::signals,
        crate::portfolio::anomalies,
        crate::controls::get_kill_switch,
        crate::controls::set_kill_switch,
        crate::stream::stream,
        crate::health::healthz,
        crate::health::readyz,
        crate::health::metrics,
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "orders", description = "Manual orders through the router's risk checks"),
        (name = "portfolio", description = "Positions, cash, value, P&L and statistics"),
        (name = "history", description = "Fills, model signals and anomalies"),
        (name = "events", description = "Live Server-Sent Events"),
        (name = "controls", description = "The kill switch (admin)"),
        (name = "health", description = "Liveness, readiness, metrics"),
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Routes of this resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/openapi.json",
            get(|State(state): State<AppState>| async move {
                let c = state.config();
                axum::Json(document(c.max_page_size, &c.instruments))
            }),
        )
        .route(
            "/docs",
            get(|State(state): State<AppState>| async move {
                let c = state.config();
                Html(render_docs(&document(c.max_page_size, &c.instruments)))
            }),
        )
}

/// The document as served: [`ApiDoc`] with every `limit` parameter's maximum set to this
/// deployment's `max_page_size`, and the configured instruments as examples of an order's
/// symbol (settings, so the annotations cannot know them).
pub fn document(max_page_size: u32, instruments: &[String]) -> serde_json::Value {
    let mut json = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    if !instruments.is_empty() {
        json["components"]["schemas"]["NewOrder"]["properties"]["symbol"]["examples"] =
            serde_json::json!(instruments);
    }
    if let Some(paths) = json["paths"].as_object_mut() {
        for operation in paths.values_mut().filter_map(|p| p.as_object_mut()) {
            for op in operation.values_mut() {
                let params = op.get_mut("parameters").and_then(|p| p.as_array_mut());
                for param in params.into_iter().flatten() {
                    if param["name"] == "limit" {
                        param["schema"]["maximum"] = serde_json::json!(max_page_size);
                    }
                }
            }
        }
    }
    json
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A browsable page listing every operation, its parameters, body and responses.
pub fn render_docs(json: &serde_json::Value) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>tradestream API</title>\
         <style>body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}\
         code,pre{background:#f4f4f4;padding:.1em .3em;border-radius:3px}\
         .op{border:1px solid #ddd;border-radius:6px;margin:1em 0;padding:.6em 1em}\
         .m{font-weight:bold;text-transform:uppercase;display:inline-block;width:5em}\
         .get{color:#0a7}.post{color:#06c}.delete{color:#c33}table{border-collapse:collapse}\
         td,th{border-bottom:1px solid #eee;padding:.2em .6em;text-align:left;vertical-align:top}\
         </style></head><body>",
    );
    html.push_str(&format!(
        "<h1>{}</h1><p>{}</p><p>Machine-readable: <a href=\"/openapi.json\">/openapi.json</a> (OpenAPI {}).</p>",
        esc(json["info"]["title"].as_str().unwrap_or("API")),
        esc(json["info"]["description"].as_str().unwrap_or("")),
        esc(json["openapi"].as_str().unwrap_or("3")),
    ));
    if let Some(paths) = json["paths"].as_object() {
        for (path, item) in paths {
            let Some(ops) = item.as_object() else {
                continue;
            };
            for (method, op) in ops {
                html.push_str(&format!(
                    "<div class=\"op\"><span class=\"m {m}\">{m}</span> <code>{p}</code> — {s}",
                    m = esc(method),
                    p = esc(path),
                    s = esc(op["summary"].as_str().unwrap_or("")),
                ));
                if let Some(d) = op["description"].as_str() {
                    html.push_str(&format!("<p>{}</p>", esc(d)));
                }
                if let Some(sec) = op["security"].as_array() {
                    let scopes: Vec<String> = sec
                        .iter()
                        .filter_map(|s| s["bearer"].as_array())
                        .flatten()
                        .filter_map(|s| s.as_str().map(esc))
                        .collect();
                    html.push_str(&format!("<p>Scope: <code>{}</code></p>", scopes.join(" ")));
                }
                if let Some(params) = op["parameters"].as_array() {
                    html.push_str("<table><tr><th>parameter</th><th>in</th><th>meaning</th></tr>");
                    for p in params {
                        html.push_str(&format!(
                            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                            esc(p["name"].as_str().unwrap_or("")),
                            esc(p["in"].as_str().unwrap_or("")),
                            esc(p["description"].as_str().unwrap_or("")),
                        ));
                    }
                    html.push_str("</table>");
                }
                if let Some(body) = op["requestBody"]["content"].as_object() {
                    for (media, c) in body {
                        html.push_str(&format!(
                            "<p>Body ({}): <code>{}</code></p>",
                            esc(media),
                            esc(c["schema"]["$ref"].as_str().unwrap_or("object")),
                        ));
                    }
                }
                if let Some(responses) = op["responses"].as_object() {
                    html.push_str("<table><tr><th>status</th><th>meaning</th></tr>");
                    for (code, r) in responses {
                        html.push_str(&format!(
                            "<tr><td>{}</td><td>{}</td></tr>",
                            esc(code),
                            esc(r["description"].as_str().unwrap_or("")),
                        ));
                    }
                    html.push_str("</table>");
                }
                html.push_str("</div>");
            }
        }
    }
    if let Some(schemas) = json["components"]["schemas"].as_object() {
        html.push_str("<h2>Schemas</h2>");
        for (name, schema) in schemas {
            html.push_str(&format!(
                "<h3 id=\"{n}\">{n}</h3><pre>{}</pre>",
                esc(&serde_json::to_string_pretty(schema).unwrap_or_default()),
                n = esc(name),
            ));
        }
    }
    html.push_str("</body></html>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_covers_every_route_and_security() {
        let json = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        for path in [
            "/v1/orders",
            "/v1/orders/{order_id}",
            "/v1/orders/{order_id}/cancel",
            "/v1/positions",
            "/v1/portfolio",
            "/v1/portfolio/stats",
            "/v1/fills",
            "/v1/signals",
            "/v1/anomalies",
            "/v1/stream",
            "/v1/controls/kill-switch",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(json["paths"][path].is_object(), "{path} missing");
        }
        assert_eq!(
            json["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert!(json["components"]["schemas"]["NewOrder"].is_object());
        let html = render_docs(&document(500, &[]));
        assert!(html.contains("/v1/orders/{order_id}"));
    }

    /// Enums are documented as the API sends and requires them, and the constraints the
    /// server enforces are in the document.
    #[test]
    fn api_enums_and_constraints_are_documented_as_enforced() {
        use crate::model::{OrderStatus, OrderType, Side, TimeInForce};
        let json = document(123, &["AAPL".to_string()]);
        let values = |name: &str| -> Vec<String> {
            json["components"]["schemas"][name]["enum"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        };
        let sent = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
        assert_eq!(
            values("Side"),
            [Side::Buy, Side::Sell].map(|v| sent(serde_json::json!(v)))
        );
        assert_eq!(values("Side"), ["BUY", "SELL"]);
        for (name, expect) in [
            ("OrderType", vec!["MARKET", "LIMIT", "STOP", "STOP_LIMIT"]),
            ("TimeInForce", vec!["DAY", "GTC", "IOC"]),
            (
                "OrderStatus",
                vec![
                    "NEW",
                    "ACCEPTED",
                    "PARTIALLY_FILLED",
                    "FILLED",
                    "CANCELED",
                    "REJECTED",
                    "EXPIRED",
                ],
            ),
        ] {
            assert_eq!(values(name), expect, "{name}");
        }
        for v in [OrderType::StopLimit, OrderType::Market] {
            assert_eq!(sent(serde_json::json!(v)), v.as_str());
        }
        assert_eq!(sent(serde_json::json!(TimeInForce::Gtc)), "GTC");
        assert_eq!(
            sent(serde_json::json!(OrderStatus::PartiallyFilled)),
            "PARTIALLY_FILLED"
        );
        let param = |path: &str, name: &str| {
            json["paths"][path]["get"]["parameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == name))
                .cloned()
                .unwrap_or_default()
        };
        assert!(
            json["paths"]["/healthz"]["get"].get("parameters").is_none(),
            "no null parameters added"
        );
        assert_eq!(param("/v1/orders", "limit")["schema"]["minimum"], 1);
        assert_eq!(param("/v1/orders", "limit")["schema"]["maximum"], 123);
        assert_eq!(param("/v1/fills", "cursor")["schema"]["minLength"], 2);
        assert!(param("/v1/positions", "account")["schema"]["pattern"].is_string());
        assert!(param("/v1/orders", "symbol")["schema"]["pattern"].is_string());
        let reason = &json["components"]["schemas"]["KillSwitchRequest"]["properties"]["reason"];
        assert_eq!(reason["maxLength"], 500);
        assert_eq!(reason["minLength"], 1);
        assert_eq!(
            json["components"]["schemas"]["NewOrder"]["properties"]["symbol"]["examples"],
            serde_json::json!(["AAPL"])
        );
    }
}
