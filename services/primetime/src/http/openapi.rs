//! The OpenAPI 3.1 document of the HTTP API.

use actix_web::HttpResponse;
use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// `GET /openapi.json`
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok().json(document())
}

pub fn document() -> Value {
    let lat = json!({"name": "lat", "in": "query", "required": true, "schema": {"type": "number", "minimum": -90, "maximum": 90}});
    let lng = json!({"name": "lng", "in": "query", "required": true, "schema": {"type": "number", "minimum": -180, "maximum": 180}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "primetime", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Realtime surge multipliers per H3 cell. Unpriced cells answer 1.0 with priced=false (status 200)."},
        "paths": {
            "/v1/price": {"get": {
                "summary": "Multiplier at a location",
                "parameters": [lat, lng],
                "responses": {"200": {"description": "The price", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Price"}}}},
                              "400": error_response("Invalid or missing lat/lng")}}},
            "/v1/prices": {"post": {
                "summary": "Multipliers at up to 1,000 locations",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["locations"],
                    "properties": {"locations": {"type": "array", "maxItems": 1000, "items": {
                        "type": "object", "required": ["lat", "lng"],
                        "properties": {"lat": {"type": "number"}, "lng": {"type": "number"}}}}}}}}},
                "responses": {"200": {"description": "One price per location, in order", "content": {"application/json": {"schema": {
                                  "type": "object", "properties": {
                                      "prices": {"type": "array", "items": {"$ref": "#/components/schemas/Price"}},
                                      "tick": {"type": ["integer", "null"]}, "model_version": {"type": "string"}, "stale": {"type": "boolean"}}}}}},
                              "400": error_response("Invalid body or location"),
                              "413": error_response("Body too large or more than 1,000 locations")}}},
            "/v1/cells/{cell}": {"get": {
                "summary": "A cell's decision with its explanation",
                "parameters": [{"name": "cell", "in": "path", "required": true, "schema": {"type": "string"}, "description": "H3 index (hex) at the price resolution"}],
                "responses": {"200": {"description": "The price and explanation (null when unpriced)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CellPrice"}}}},
                              "400": error_response("Not a cell of the price resolution")}}},
            "/v1/cells": {"get": {
                "summary": "Priced cells whose centre lies in a bounding box (most expensive first)",
                "parameters": [{"name": "bbox", "in": "query", "required": true, "schema": {"type": "string"}, "description": "minLng,minLat,maxLng,maxLat"}],
                "responses": {"200": {"description": "Cells", "content": {"application/json": {"schema": {"type": "object"}}}},
                              "400": error_response("Invalid bbox")}}},
            "/v1/status": {"get": {"summary": "Watermark, lag, counters", "responses": {"200": {"description": "Status"}}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "Alive"}}}},
            "/readyz": {"get": {"summary": "Readiness: a tick was published recently", "responses": {"200": {"description": "Ready"}, "503": {"description": "Not ready, with reasons"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "Text exposition format"}}}}
        },
        "components": {"schemas": {
            "Price": {"type": "object", "required": ["cell", "multiplier", "priced", "tick", "model_version", "stale"], "properties": {
                "cell": {"type": "string"}, "multiplier": {"type": "number", "minimum": 1.0},
                "priced": {"type": "boolean"}, "since_tick": {"type": ["integer", "null"]},
                "tick": {"type": ["integer", "null"]}, "model_version": {"type": "string"}, "stale": {"type": "boolean"}}},
            "CellPrice": {"allOf": [{"$ref": "#/components/schemas/Price"}, {"type": "object", "properties": {
                "lat": {"type": "number"}, "lng": {"type": "number"}, "explanation": {"type": ["object", "null"]}}}]},
            "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
                "status": {"type": "integer"}, "code": {"type": "string"}, "field": {"type": ["string", "null"]}, "message": {"type": "string"}}}}}
        }}
    })
}
