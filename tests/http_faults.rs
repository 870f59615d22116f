//! Fault cases for the HTTP client, against a mock server (wiremock): retries and
//! Retry-After, what is never retried, conflicts, paging quirks of other servers, OAuth2
//! token reuse and refresh, and that errors carry no search values or secrets.
//! (The happy path runs against the real FHIR server in fhir_e2e.rs.)

use std::time::{Duration, Instant};

use careplane::fhir::auth::{Auth, OAuth2};
use careplane::fhir::http::HttpStore;
use careplane::fhir::{FhirError, Precondition, Query};
use secrecy::SecretString;
use serde_json::json;
use wiremock::matchers::{body_string_contains, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn bundle(entries: serde_json::Value, next: Option<&str>) -> serde_json::Value {
    let mut b = json!({"resourceType": "Bundle", "type": "searchset", "entry": entries});
    if let Some(n) = next {
        b["link"] = json!([{"relation": "next", "url": n}]);
    }
    b
}

#[test]
fn a_429_is_retried_after_the_servers_retry_after() {
    rt().block_on(async {
        let mock = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/fhir/Group"))
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "1"))
            .up_to_n_times(1)
            .mount(&mock)
            .await;
        Mock::given(method("GET"))
            .and(path("/fhir/Group"))
            .respond_with(ResponseTemplate::new(200).set_body_json(bundle(json!([{"resource": {"resourceType": "Group", "id": "g1"}, "search": {"mode": "match"}}]), None)))
            .mount(&mock)
            .await;
        let store = HttpStore::new(&format!("{}/fhir", mock.uri()), Auth::None).unwrap();
        let started = Instant::now();
        let found = store.search(&Query::new("Group")).await.unwrap();
        assert_eq!(found.len(), 1);
        assert!(started.elapsed() >= Duration::from_millis(950), "waited {:?}", started.elapsed());
        assert_eq!(store.request_count(), 2);
    });
}

#[test]
fn a_plain_post_is_never_retried_but_a_conditional_one_is() {
    rt().block_on(async {
        let mock = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/fhir/Group"))
            .respond_with(ResponseTemplate::new(503))
            .mount(&mock)
            .await;
        let store = HttpStore::new(&format!("{}/fhir", mock.uri()), Auth::None)
            .unwrap()
            .with_max_retries(2);
        let g = json!({"resourceType": "Group", "type": "practitioner", "actual": true});
        let err = store.create(&g, None).await.unwrap_err();
        assert!(matches!(err, FhirError::Http { status: 503, .. }), "{err}");
        assert_eq!(
            store.request_count(),
            1,
            "a POST without If-None-Exist is sent once"
        );

        let cond = Query::new("Group").param("identifier", "urn:x|y");
        store.create(&g, Some(&cond)).await.unwrap_err();
        assert_eq!(
            store.request_count(),
            1 + 3,
            "a conditional create is retried"
        );
    });
}

#[test]
fn a_412_or_409_on_update_is_a_conflict_and_if_match_is_sent() {
    rt().block_on(async {
        let mock = MockServer::start().await;
        Mock::given(method("PUT"))
            .and(path("/fhir/Group/g1"))
            .and(header("If-Match", "W/\"opaque-v7\""))
            .respond_with(ResponseTemplate::new(412))
            .mount(&mock)
            .await;
        Mock::given(method("PUT"))
            .and(path("/fhir/Group/g2"))
            .respond_with(ResponseTemplate::new(409))
            .mount(&mock)
            .await;
        let store = HttpStore::new(&format!("{}/fhir", mock.uri()), Auth::None).unwrap();
        let pre = Precondition {
            version_id: Some("opaque-v7".into()),
            last_updated: None,
        };
        for id in ["g1", "g2"] {
            let g = json!({"resourceType": "Group", "id": id});
            let err = store.update(&g, &pre).await.unwrap_err();
            assert!(matches!(err, FhirError::Conflict { .. }), "{id}: {err}");
        }
    });
}

#[test]
fn if_unmodified_since_is_sent_where_there_is_no_version() {
    rt().block_on(async {
        let mock = MockServer::start().await;
        Mock::given(method("PUT"))
            .and(path("/fhir/Group/g1"))
            // (a closure: wiremock's header matcher splits values at commas)
            .and(|r: &wiremock::Request| {
                r.headers
                    .get("If-Unmodified-Since")
                    .and_then(|v| v.to_str().ok())
                    == Some("Fri, 20 Nov 2026 14:05:00 GMT")
            })
            .respond_with(ResponseTemplate::new(200))
            .mount(&mock)
            .await;
        let store = HttpStore::new(&format!("{}/fhir", mock.uri()), Auth::None).unwrap();
        let pre = Precondition {
            version_id: None,
            last_updated: Some("2026-11-20T14:05:00.000Z".into()),
        };
        let w = store
            .update(&json!({"resourceType": "Group", "id": "g1"}), &pre)
            .await
            .unwrap();
        assert_eq!(w.id, "g1");
    });
}

#[test]
fn paging_follows_opaque_next_links_and_counts_only_matches() {
    rt().block_on(async {
        let mock = MockServer::start().await;
        let page2 = format!("{}/fhir?_getpages=abc123&_page=2", mock.uri());
        Mock::given(method("GET"))
            .and(path("/fhir/Practitioner"))
            .and(header("Prefer", "handling=strict"))
            .respond_with(ResponseTemplate::new(200).set_body_json(bundle(
                json!([
                    {"resource": {"resourceType": "Practitioner", "id": "a"}, "search": {"mode": "match"}},
                    {"resource": {"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational"}]}, "search": {"mode": "outcome"}},
                    {"resource": {"resourceType": "Organization", "id": "o"}, "search": {"mode": "include"}}
                ]),
                Some(&page2),
            )))
            .mount(&mock)
            .await;
        Mock::given(method("GET"))
            .and(path("/fhir"))
            .and(query_param("_getpages", "abc123"))
            .respond_with(ResponseTemplate::new(200).set_body_json(bundle(
                json!([{"resource": {"resourceType": "Practitioner", "id": "b"}}]),
                None,
            )))
            .mount(&mock)
            .await;
        let store = HttpStore::new(&format!("{}/fhir/", mock.uri()), Auth::None).unwrap();
        let found = store.search(&Query::new("Practitioner")).await.unwrap();
        let ids: Vec<&str> = found.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["a", "b"]);
    });
}

#[test]
fn a_warning_about_the_search_fails_it_without_printing_search_values() {
    rt().block_on(async {
        let mock = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/fhir/Patient"))
            .respond_with(ResponseTemplate::new(200).set_body_json(bundle(
                json!([{"resource": {"resourceType": "OperationOutcome", "issue": [{"severity": "warning", "code": "not-supported", "details": {"text": "parameter ignored"}}]}, "search": {"mode": "outcome"}}]),
                None,
            )))
            .mount(&mock)
            .await;
        let store = HttpStore::new(&format!("{}/fhir", mock.uri()), Auth::None).unwrap();
        let q = Query::new("Patient").param("birthdate", "1961-04-02").param("name", "Quenby");
        let err = store.search(&q).await.unwrap_err().to_string();
        // servers quote patient data in messages about patient searches: withheld
        assert!(err.contains("withheld") && !err.contains("parameter ignored"), "{err}");
        assert!(err.contains("birthdate"), "{err}");
        assert!(!err.contains("1961") && !err.contains("Quenby"), "no PHI in errors: {err}");
    });
}

#[test]
fn a_create_with_an_empty_body_takes_its_id_from_location() {
    rt().block_on(async {
        let mock = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/fhir/Group"))
            .respond_with(
                ResponseTemplate::new(201)
                    .insert_header("Location", format!("{}/fhir/Group/new-id-1", mock.uri())),
            )
            .mount(&mock)
            .await;
        let store = HttpStore::new(&format!("{}/fhir", mock.uri()), Auth::None).unwrap();
        let w = store
            .create(&json!({"resourceType": "Group"}), None)
            .await
            .unwrap();
        assert_eq!(w.id, "new-id-1");
        assert_eq!(w.version_id, None);
    });
}

#[test]
fn oauth2_tokens_are_reused_refreshed_once_on_401_and_never_printed() {
    rt().block_on(async {
        let mock = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/auth/token/"))
            .and(body_string_contains("grant_type=client_credentials"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"access_token": "tok-SECRET-1", "expires_in": 36000, "token_type": "Bearer"})))
            .expect(2)
            .mount(&mock)
            .await;
        // the first search works; then the server starts rejecting the token once
        Mock::given(method("GET"))
            .and(path("/fhir/Group"))
            .respond_with(ResponseTemplate::new(200).set_body_json(bundle(json!([]), None)))
            .up_to_n_times(3)
            .mount(&mock)
            .await;
        Mock::given(method("GET"))
            .and(path("/fhir/Group"))
            .respond_with(ResponseTemplate::new(401))
            .mount(&mock)
            .await;
        let auth = Auth::oauth2(OAuth2 {
            token_url: format!("{}/auth/token/", mock.uri()),
            client_id: "client".into(),
            client_secret: SecretString::from("client-SECRET".to_owned()),
            scope: None,
        });
        assert!(!format!("{auth:?}").contains("client-SECRET"));
        let store = HttpStore::new(&format!("{}/fhir", mock.uri()), auth).unwrap();
        for _ in 0..3 {
            store.search(&Query::new("Group")).await.unwrap();
        }
        // now 401: one refresh, one retry, then a clear error without secrets
        let err = store.search(&Query::new("Group")).await.unwrap_err().to_string();
        assert!(err.contains("401") && err.contains("credentials"), "{err}");
        assert!(!err.contains("SECRET"), "{err}");
    });
}
