//! The FHIR source (`POST /fhir`, `POST /fhir/{type}`, `PUT`/`DELETE /fhir/{type}/{id}`) over real
//! sockets with a real HTTP client, on both store backends: what a device backend sends is
//! logged, stored with versions and search index rows, answered after the commit, readable and
//! searchable at once; retries create nothing twice; bad input is refused with the reason and
//! still logged.

mod gateway;

use serde_json::{Value, json};

const FHIR: &str = "application/fhir+json";

struct Client {
    http: reqwest::Client,
    base: String,
    backend: &'static str,
}

impl Client {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = format!("{}{path}", self.base);
        let mut rb = self.http.request(method.clone(), &url);
        if let Some(b) = body {
            rb = rb.header("content-type", FHIR).body(b);
        }
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: {method} {url}: {e}", self.backend));
        let status = r.status().as_u16();
        let h = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| {
                panic!("{}: {method} {url}: not JSON ({e}): {text}", self.backend)
            })
        };
        (status, h, v)
    }

    /// Poll an export status URL (202 while running) until the manifest (200).
    async fn export_manifest(&self, status_url: &str) -> Value {
        for _ in 0..500 {
            let r = self
                .http
                .get(status_url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", self.backend));
            if r.status() == 200 {
                return r.json().await.unwrap_or(Value::Null);
            }
            assert_eq!(r.status(), 202, "{}: {status_url}", self.backend);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!(
            "{}: the export at {status_url} did not finish",
            self.backend
        );
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let (s, _, v) = self.send(reqwest::Method::GET, path, None, &[]).await;
        (s, v)
    }
}

fn heart_rate(subject: &str, at: &str, bpm: i64) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": at,
        "valueQuantity": {"value": bpm, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"},
    })
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_backends_write_resources_that_are_stored_versioned_and_searchable() {
    let http = gateway::http_client();
    for (backend, url) in gateway::store_urls("fhir-write").await {
        let running = gateway::start(&gateway::config(&url)).await;
        let base = format!(
            "http://{}",
            running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
        );
        let c = Client {
            http: http.clone(),
            base: base.clone(),
            backend,
        };
        use reqwest::Method;

        // A transaction: a Patient and two readings that reference it by its fullUrl.
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a",
             "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "W-7"}],
                          "name": [{"family": "Chalmers", "given": ["Peter"]}], "birthDate": "1974-12-25"},
             "request": {"method": "POST", "url": "Patient"}},
            {"resource": heart_rate("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "2026-11-30T08:00:00Z", 61),
             "request": {"method": "POST", "url": "Observation"}},
            {"resource": heart_rate("urn:uuid:61ebe359-bfdc-4613-8bf2-c5e300945f0a", "2026-11-30T08:01:00Z", 64),
             "request": {"method": "POST", "url": "Observation"}},
        ]})
        .to_string();
        let (s, h, resp) = c.send(Method::POST, "/fhir", Some(tx.clone()), &[]).await;
        assert_eq!(s, 200, "{backend}: {resp}");
        assert_eq!(resp["type"], "transaction-response", "{backend}");
        let entries = resp["entry"].as_array().cloned().unwrap_or_default();
        assert_eq!(entries.len(), 3, "{backend}: {resp}");
        for e in &entries {
            assert_eq!(e["response"]["status"], "201 Created", "{backend}: {resp}");
            assert_eq!(e["response"]["etag"], "W/\"1\"", "{backend}");
        }
        let loc = |e: &Value| -> String {
            let l = e["response"]["location"].as_str().unwrap_or("").to_string();
            l.split("/_history").next().unwrap_or("").to_string()
        };
        let patient = loc(&entries[0]);
        assert!(patient.starts_with("Patient/"), "{backend}: {patient}");
        let message = header(&h, "x-v2fhir-message").to_string();
        assert!(message.starts_with("/messages/"), "{backend}: {message}");

        // Readable, with the reference resolved to the Patient's id, and searchable at once.
        let (s, obs) = c.get(&format!("/fhir/{}", loc(&entries[1]))).await;
        assert_eq!(s, 200, "{backend}: {obs}");
        assert_eq!(obs["subject"]["reference"], json!(patient), "{backend}");
        assert_eq!(obs["meta"]["versionId"], "1", "{backend}");
        let pid = patient.trim_start_matches("Patient/");
        let (s, found) = c
            .get(&format!(
                "/fhir/Observation?patient={pid}&code=http://loinc.org|8867-4&date=ge2026-11-30T08:00:30Z"
            ))
            .await;
        assert_eq!(s, 200, "{backend}: {found}");
        assert_eq!(found["total"], 1, "{backend}: {found}");
        let (_, by_id) = c
            .get("/fhir/Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|W-7")
            .await;
        assert_eq!(by_id["total"], 1, "{backend}: {by_id}");

        // The submission is in the message log as received.
        let (s, logged) = c.get(&message).await;
        assert_eq!(s, 200, "{backend}: {logged}");
        assert_eq!(logged["source"], "fhir", "{backend}: {logged}");
        assert_eq!(logged["status"], "converted", "{backend}");
        assert_eq!(logged["message_type"], "FHIR^transaction", "{backend}");
        // Reprocessing validates it again (it is not parsed as HL7 v2).
        let (s, _, re) = c
            .send(Method::POST, &format!("{message}/reprocess"), None, &[])
            .await;
        assert_eq!(s, 200, "{backend}: {re}");
        assert_eq!(re["status"], "converted", "{backend}: {re}");

        // The same request again (a retry): answered the same, nothing new written.
        let (s, _, again) = c.send(Method::POST, "/fhir", Some(tx.clone()), &[]).await;
        assert_eq!(s, 200, "{backend}: {again}");
        assert_eq!(
            again["entry"]
                .as_array()
                .map(|a| a.iter().map(loc).collect::<Vec<_>>()),
            Some(entries.iter().map(loc).collect::<Vec<_>>()),
            "{backend}"
        );
        let (_, all_obs) = c.get(&format!("/fhir/Observation?patient={pid}")).await;
        assert_eq!(all_obs["total"], 2, "{backend}: {all_obs}");

        // The same reading POSTed on its own (another body, same content): the same resource.
        let reading = heart_rate(&patient, "2026-11-30T08:00:00Z", 61).to_string();
        let (s, h1, body) = c
            .send(Method::POST, "/fhir/Observation", Some(reading), &[])
            .await;
        assert_eq!(s, 200, "{backend}: not created again: {body}");
        assert!(
            header(&h1, "location").ends_with(&format!("/fhir/{}/_history/1", loc(&entries[1]))),
            "{backend}: {h1:?}"
        );

        // PUT with a client id: 201, then an update: 200, version 2, history of two.
        let first = json!({"resourceType": "Observation", "id": "spo2-1", "status": "preliminary",
            "code": {"coding": [{"system": "http://loinc.org", "code": "59408-5"}]},
            "subject": {"reference": patient}, "effectiveDateTime": "2026-11-30T08:05:00Z",
            "valueQuantity": {"value": 97, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}});
        let mut spo2 = first.clone();
        let (s, h, body) = c
            .send(
                Method::PUT,
                "/fhir/Observation/spo2-1",
                Some(spo2.to_string()),
                &[],
            )
            .await;
        assert_eq!(s, 201, "{backend}: {body}");
        assert_eq!(body["id"], "spo2-1", "{backend}");
        assert_eq!(header(&h, "etag"), "W/\"1\"", "{backend}");
        assert!(!header(&h, "last-modified").is_empty(), "{backend}");
        spo2["status"] = json!("final");
        let (s, h, body) = c
            .send(
                Method::PUT,
                "/fhir/Observation/spo2-1",
                Some(spo2.to_string()),
                &[("prefer", "return=minimal")],
            )
            .await;
        assert_eq!(s, 200, "{backend}: {body}");
        assert_eq!(body, Value::Null, "{backend}: return=minimal has no body");
        assert_eq!(header(&h, "etag"), "W/\"2\"", "{backend}");
        // The first body again, byte for byte: it is written again (version 3), not taken for a
        // repeat of the first request.
        let (s, h, body) = c
            .send(
                Method::PUT,
                "/fhir/Observation/spo2-1",
                Some(first.to_string()),
                &[],
            )
            .await;
        assert_eq!(s, 200, "{backend}: {body}");
        assert_eq!(header(&h, "etag"), "W/\"3\"", "{backend}");
        assert_eq!(body["status"], "preliminary", "{backend}: {body}");
        let (_, hist) = c.get("/fhir/Observation/spo2-1/_history").await;
        assert_eq!(hist["total"], 3, "{backend}: {hist}");

        // DELETE: 204, then reads answer 410.
        let (s, _, _) = c
            .send(Method::DELETE, "/fhir/Observation/spo2-1", None, &[])
            .await;
        assert_eq!(s, 204, "{backend}");
        let (s, _) = c.get("/fhir/Observation/spo2-1").await;
        assert_eq!(s, 410, "{backend}");

        // Conditional create in a transaction: the Patient exists (same identifier), so it is
        // left as it is (200, version 1) and the reading's reference goes to it.
        let cond = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:0d3a51f8-5b0c-4c39-a5c6-b6a2a0a4f1aa",
             "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "W-7"}],
                          "name": [{"family": "Someone-Else"}]},
             "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:oid:1.2.36.146.595.217.0.1|W-7"}},
            {"resource": heart_rate("urn:uuid:0d3a51f8-5b0c-4c39-a5c6-b6a2a0a4f1aa", "2026-11-30T08:10:00Z", 66),
             "request": {"method": "POST", "url": "Observation"}},
        ]});
        let (s, _, resp) = c
            .send(Method::POST, "/fhir", Some(cond.to_string()), &[])
            .await;
        assert_eq!(s, 200, "{backend}: {resp}");
        assert_eq!(
            resp["entry"][0]["response"]["status"], "200 OK",
            "{backend}: {resp}"
        );
        assert_eq!(
            loc(&resp["entry"][0]),
            patient,
            "{backend}: the existing Patient"
        );
        assert_eq!(
            resp["entry"][1]["response"]["status"], "201 Created",
            "{backend}: {resp}"
        );
        let (_, reading) = c.get(&format!("/fhir/{}", loc(&resp["entry"][1]))).await;
        assert_eq!(reading["subject"]["reference"], json!(patient), "{backend}");
        let (_, p) = c.get(&format!("/fhir/{patient}")).await;
        assert_eq!(
            p["name"][0]["family"], "Chalmers",
            "{backend}: not overwritten"
        );
        assert_eq!(p["meta"]["versionId"], "1", "{backend}");
        // The same with the If-None-Exist header: found → 200 with it; not found → 201.
        let newcomer = json!({"resourceType": "Patient",
            "identifier": [{"system": "urn:example:device-users", "value": "u-99"}]});
        let (s, _, body) = c
            .send(
                Method::POST,
                "/fhir/Patient",
                Some(json!({"resourceType": "Patient", "gender": "male"}).to_string()),
                &[(
                    "if-none-exist",
                    "identifier=urn:oid:1.2.36.146.595.217.0.1|W-7",
                )],
            )
            .await;
        assert_eq!(s, 200, "{backend}: {body}");
        assert_eq!(body["id"], json!(pid), "{backend}");
        let (s, _, body) = c
            .send(
                Method::POST,
                "/fhir/Patient",
                Some(newcomer.to_string()),
                &[("if-none-exist", "identifier=urn:example:device-users|u-99")],
            )
            .await;
        assert_eq!(s, 201, "{backend}: {body}");
        let newcomer_id = body["id"].as_str().unwrap_or("").to_string();
        // Conditional update: one match → that resource updated; none → created; several → 412.
        let (s, h, body) = c
            .send(
                Method::PUT,
                "/fhir/Patient?identifier=urn:oid:1.2.36.146.595.217.0.1|W-7",
                Some(json!({"resourceType": "Patient",
                    "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "W-7"}],
                    "name": [{"family": "Chalmers", "given": ["Peter", "James"]}], "birthDate": "1974-12-25"}).to_string()),
                &[],
            )
            .await;
        assert_eq!(s, 200, "{backend}: {body}");
        assert_eq!(body["id"], json!(pid), "{backend}");
        assert_eq!(header(&h, "etag"), "W/\"2\"", "{backend}");
        let (s, _, body) = c
            .send(
                Method::PUT,
                "/fhir/Patient?identifier=urn:example:device-users|u-100",
                Some(
                    json!({"resourceType": "Patient",
                    "identifier": [{"system": "urn:example:device-users", "value": "u-100"}]})
                    .to_string(),
                ),
                &[],
            )
            .await;
        assert_eq!(s, 201, "{backend}: {body}");
        let (s, _, oo) = c
            .send(
                Method::PUT,
                "/fhir/Observation?code=http://loinc.org|8867-4",
                Some(heart_rate(&patient, "2026-11-30T08:20:00Z", 70).to_string()),
                &[],
            )
            .await;
        assert_eq!(s, 412, "{backend}: {oo}");
        let (s, _, oo) = c
            .send(
                Method::PUT,
                "/fhir/Patient?banana=1",
                Some(newcomer.to_string()),
                &[],
            )
            .await;
        assert_eq!(
            s, 400,
            "{backend}: an unknown parameter in a condition: {oo}"
        );
        // Conditional delete: none → 204, nothing; one → deleted.
        let (s, _, _) = c
            .send(
                Method::DELETE,
                "/fhir/Patient?identifier=urn:example:device-users|nobody",
                None,
                &[],
            )
            .await;
        assert_eq!(s, 204, "{backend}");
        let (s, _, _) = c
            .send(
                Method::DELETE,
                "/fhir/Patient?identifier=urn:example:device-users|u-99",
                None,
                &[],
            )
            .await;
        assert_eq!(s, 204, "{backend}");
        let (s, _) = c.get(&format!("/fhir/Patient/{newcomer_id}")).await;
        assert_eq!(s, 410, "{backend}");

        // A conditional reference: a device backend knows the patient by the MRN the HL7 v2
        // feed sent, not by the gateway's id.
        let adt = gateway::adt("CR1", "MRN-CR1", "");
        let r = c
            .http
            .post(format!("{base}/v2/messages"))
            .header("content-type", "x-application/hl7-v2+er7")
            .body(adt)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(r.status().is_success(), "{backend}");
        let (_, fed) = c.get("/fhir/Patient?identifier=MRN-CR1").await;
        let fed_id = fed["entry"][0]["resource"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{backend}: the fed Patient: {fed}"))
            .to_string();
        let (s, _, body) = c
            .send(
                Method::POST,
                "/fhir/Observation",
                Some(
                    heart_rate("Patient?identifier=MRN-CR1", "2026-11-30T08:30:00Z", 71)
                        .to_string(),
                ),
                &[],
            )
            .await;
        assert_eq!(s, 201, "{backend}: {body}");
        assert_eq!(
            body["subject"]["reference"],
            json!(format!("Patient/{fed_id}")),
            "{backend}"
        );
        let (s, _, oo) = c
            .send(
                Method::POST,
                "/fhir/Observation",
                Some(
                    heart_rate("Patient?identifier=NOBODY", "2026-11-30T08:31:00Z", 71).to_string(),
                ),
                &[],
            )
            .await;
        assert_eq!(s, 412, "{backend}: {oo}");
        assert!(
            oo.to_string().contains("matches no resource"),
            "{backend}: {oo}"
        );

        // A batch: the valid entry is stored, the invalid one answered with why.
        let mut bad = heart_rate(&patient, "2026-11-30T09:00:00Z", 70);
        bad["status"] = json!("banana");
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": heart_rate(&patient, "2026-11-30T09:00:00Z", 70), "request": {"method": "POST", "url": "Observation"}},
            {"resource": bad, "request": {"method": "POST", "url": "Observation"}},
        ]});
        let (s, _, resp) = c
            .send(
                Method::POST,
                "/fhir",
                Some(batch.to_string()),
                &[("prefer", "return=representation")],
            )
            .await;
        assert_eq!(s, 200, "{backend}: {resp}");
        assert_eq!(resp["type"], "batch-response", "{backend}");
        assert_eq!(
            resp["entry"][0]["response"]["status"], "201 Created",
            "{backend}: {resp}"
        );
        assert_eq!(
            resp["entry"][0]["resource"]["valueQuantity"]["value"], 70,
            "{backend}"
        );
        assert_eq!(
            resp["entry"][1]["response"]["status"], "422 Unprocessable Entity",
            "{backend}: {resp}"
        );
        let why = resp["entry"][1]["response"]["outcome"].to_string();
        assert!(why.contains("Bundle.entry[1].resource"), "{backend}: {why}");

        // The same invalid entry in a transaction: nothing is written, 422 with the location.
        let tx_bad = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": heart_rate(&patient, "2026-11-30T10:00:00Z", 80), "request": {"method": "POST", "url": "Observation"}},
            batch["entry"][1].clone(),
        ]});
        let (s, _, oo) = c
            .send(Method::POST, "/fhir", Some(tx_bad.to_string()), &[])
            .await;
        assert_eq!(s, 422, "{backend}: {oo}");
        assert_eq!(oo["resourceType"], "OperationOutcome", "{backend}");
        let (_, after) = c
            .get(&format!(
                "/fhir/Observation?patient={pid}&date=2026-11-30T10:00:00Z"
            ))
            .await;
        assert_eq!(
            after["total"], 0,
            "{backend}: a failed transaction writes nothing"
        );

        // Not JSON, a wrong type, a wrong media type: refused with the reason; the first two are
        // logged as rejected.
        let (s, h, oo) = c
            .send(
                Method::POST,
                "/fhir/Observation",
                Some("{\"resourceType\": ".into()),
                &[],
            )
            .await;
        assert_eq!(s, 400, "{backend}: {oo}");
        assert!(oo.to_string().contains("not JSON"), "{backend}: {oo}");
        assert!(header(&h, "location").is_empty(), "{backend}");
        let (s, _, oo) = c
            .send(
                Method::PUT,
                "/fhir/Patient/p1",
                Some(heart_rate(&patient, "2026-11-30T11:00:00Z", 1).to_string()),
                &[],
            )
            .await;
        assert_eq!(s, 400, "{backend}: {oo}");
        assert!(
            oo.to_string().contains("the url names Patient"),
            "{backend}: {oo}"
        );
        let (_, rejected) = c.get("/messages?status=rejected&type=FHIR").await;
        assert_eq!(rejected["total"], 2, "{backend}: {rejected}");
        let r = c
            .http
            .post(format!("{base}/fhir/Observation"))
            .header("content-type", "text/plain")
            .body("hello")
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 415, "{backend}");

        // $validate: the verdict a write would get, nothing written or logged.
        let (_, before) = c.get("/messages").await;
        let (s, _, ok) = c
            .send(
                Method::POST,
                "/fhir/Observation/$validate",
                Some(heart_rate(&patient, "2026-11-30T12:00:00Z", 60).to_string()),
                &[],
            )
            .await;
        assert_eq!(s, 200, "{backend}: {ok}");
        assert_eq!(ok["issue"][0]["severity"], "information", "{backend}: {ok}");
        let params = json!({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": batch["entry"][1]["resource"].clone()}]});
        let (s, _, no) = c
            .send(
                Method::POST,
                "/fhir/Observation/$validate",
                Some(params.to_string()),
                &[],
            )
            .await;
        assert_eq!(s, 200, "{backend}: {no}");
        assert_eq!(no["issue"][0]["severity"], "error", "{backend}: {no}");
        assert!(no.to_string().contains("status"), "{backend}: {no}");
        let (_, _, wrong) = c
            .send(
                Method::POST,
                "/fhir/Patient/$validate",
                Some(heart_rate(&patient, "2026-11-30T12:00:00Z", 60).to_string()),
                &[],
            )
            .await;
        assert!(
            wrong.to_string().contains("the url names Patient"),
            "{backend}: {wrong}"
        );
        let (_, after) = c.get("/messages").await;
        assert_eq!(
            before["total"], after["total"],
            "{backend}: $validate logs nothing"
        );

        // The CapabilityStatement says so.
        let (_, cap) = c.get("/fhir/metadata").await;
        let rest = cap["rest"][0].to_string();
        assert!(
            rest.contains("\"transaction\"") && rest.contains("\"create\""),
            "{backend}"
        );
        running.shutdown().await;
    }
}

/// Bulk export on both stores: kick-off (202 + Content-Location), status (202, then the
/// manifest), one NDJSON file per type holding exactly the current resources, `_since`, bad
/// parameters, and deleting the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_export_writes_one_ndjson_file_per_type() {
    let http = gateway::http_client();
    for (backend, url) in gateway::store_urls("fhir-export").await {
        let mut cfg = gateway::config(&url);
        cfg.http.export_dir = gateway::scratch(&format!("export-{backend}"));
        let running = gateway::start(&cfg).await;
        let base = format!(
            "http://{}",
            running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
        );
        let c = Client {
            http: http.clone(),
            base: base.clone(),
            backend,
        };
        use reqwest::Method;
        let mut entries = vec![json!({"fullUrl": "urn:uuid:p1",
            "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:x", "value": "bulk-1"}]},
            "request": {"method": "POST", "url": "Patient"}})];
        for i in 0..25 {
            entries.push(json!({"resource": heart_rate("urn:uuid:p1", &format!("2026-11-30T09:{i:02}:00Z"), 60 + i),
                "request": {"method": "POST", "url": "Observation"}}));
        }
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        let (s, _, _) = c
            .send(Method::POST, "/fhir", Some(tx.to_string()), &[])
            .await;
        assert_eq!(s, 200, "{backend}");
        // One Observation deleted: not exported.
        let (_, obs) = c.get("/fhir/Observation?_count=1").await;
        let gone = obs["entry"][0]["resource"]["id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let (s, _, _) = c
            .send(
                Method::DELETE,
                &format!("/fhir/Observation/{gone}"),
                None,
                &[],
            )
            .await;
        assert_eq!(s, 204, "{backend}");

        let (s, h, _) = c
            .send(
                Method::GET,
                "/fhir/$export?_type=Patient,Observation",
                None,
                &[("prefer", "respond-async")],
            )
            .await;
        assert_eq!(s, 202, "{backend}");
        let status_url = header(&h, "content-location").to_string();
        assert!(
            status_url.contains("/fhir/$export-status/"),
            "{backend}: {status_url}"
        );
        let manifest = c.export_manifest(&status_url).await;
        let manifest_first = manifest.clone();
        let outputs = manifest["output"].as_array().cloned().unwrap_or_default();
        assert_eq!(outputs.len(), 2, "{backend}: {manifest}");
        for o in &outputs {
            let ty = o["type"].as_str().unwrap_or("");
            let want = if ty == "Patient" { 1 } else { 24 };
            assert_eq!(o["count"], want, "{backend}: {o}");
            let text = c
                .http
                .get(o["url"].as_str().unwrap_or(""))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .text()
                .await
                .unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
                .collect();
            assert_eq!(lines.len(), want, "{backend}: {ty}");
            assert!(
                lines
                    .iter()
                    .all(|r| r["resourceType"] == ty && r["meta"]["versionId"].is_string())
            );
            assert!(
                !text.contains(&gone),
                "{backend}: the deleted Observation is not exported"
            );
        }
        // Patient level: what is in a patient's compartment. A reading about no patient (a
        // device's calibration run, say) is in the system export only.
        let orphan = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "valueQuantity": {"value": 1, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}});
        let (s, _, _) = c
            .send(
                Method::POST,
                "/fhir/Observation",
                Some(orphan.to_string()),
                &[],
            )
            .await;
        assert_eq!(s, 201, "{backend}");
        let (s, h, _) = c
            .send(Method::GET, "/fhir/Patient/$export", None, &[])
            .await;
        assert_eq!(s, 202, "{backend}");
        let manifest = c.export_manifest(header(&h, "content-location")).await;
        assert!(
            manifest["request"]
                .as_str()
                .is_some_and(|r| r.ends_with("/Patient/$export")),
            "{backend}: {manifest}"
        );
        let counts: Vec<(String, i64)> = manifest["output"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| {
                (
                    o["type"].as_str().unwrap_or("").to_string(),
                    o["count"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(
            counts,
            vec![("Observation".to_string(), 24), ("Patient".to_string(), 1)],
            "{backend}: {manifest}"
        );
        let (s, _, oo) = c
            .send(
                Method::GET,
                "/fhir/Patient/$export?_type=Organization",
                None,
                &[],
            )
            .await;
        assert_eq!(s, 400, "{backend}: {oo}");
        // `_since` after everything: nothing to export.
        let (s, h, _) = c
            .send(
                Method::GET,
                "/fhir/$export?_since=2999-01-01T00:00:00Z",
                None,
                &[],
            )
            .await;
        assert_eq!(s, 202, "{backend}");
        let later = header(&h, "content-location").to_string();
        let empty = c.export_manifest(&later).await;
        assert_eq!(empty["output"], json!([]), "{backend}: {empty}");
        // Bad parameters, unknown jobs, and deleting a job.
        for q in ["_type=Banana", "_since=yesterday", "_typeFilter=x"] {
            let (s, _, oo) = c
                .send(Method::GET, &format!("/fhir/$export?{q}"), None, &[])
                .await;
            assert_eq!(s, 400, "{backend}: {q}: {oo}");
        }
        let (s, _) = c.get("/fhir/$export-status/nope").await;
        assert_eq!(s, 404, "{backend}");
        // A restart keeps finished jobs (their manifest is beside their files); a job the
        // restart interrupted says so.
        running.shutdown().await;
        std::fs::create_dir_all(cfg.http.export_dir.join("interrupted-job"))
            .unwrap_or_else(|e| panic!("{e}"));
        let running = gateway::start(&cfg).await;
        let c = Client {
            http: http.clone(),
            base: format!("http://{}", gateway::http_of(&running)),
            backend,
        };
        let path_of = |url: &str| url[url.find("/fhir/").unwrap_or(0)..].to_string();
        let (s, again) = c.get(&path_of(&status_url)).await;
        assert_eq!(s, 200, "{backend}: {again}");
        assert_eq!(again, manifest_first, "{backend}: the same manifest");
        let observations = again["output"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|o| o["type"] == "Observation")
            .and_then(|o| o["url"].as_str())
            .map(path_of)
            .unwrap_or_else(|| panic!("{backend}: {again}"));
        let text = c
            .http
            .get(format!("{}{observations}", c.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .text()
            .await
            .unwrap_or_default();
        assert_eq!(text.lines().count(), 24, "{backend}");
        let (s, oo) = c.get("/fhir/$export-status/interrupted-job").await;
        assert_eq!(s, 500, "{backend}: {oo}");
        assert!(
            oo["issue"][0]["diagnostics"]
                .as_str()
                .is_some_and(|d| d.contains("interrupted by a restart")),
            "{backend}: {oo}"
        );
        let status_url = format!("{}{}", c.base, path_of(&status_url));
        let r = c
            .http
            .delete(&status_url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 202, "{backend}");
        let r = c
            .http
            .get(&status_url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 404, "{backend}");
        running.shutdown().await;
    }
}

/// PATCH with a JSON Patch (RFC 6902) on both stores: applied to the current version and
/// written as an update (a new version, logged); a failing `test`, a stale `If-Match`, a change
/// of id, an unknown or deleted resource and a FHIRPath Patch body are refused, each with its
/// status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_applies_a_json_patch_to_the_current_version() {
    let http = gateway::http_client();
    for (backend, url) in gateway::store_urls("fhir-patch").await {
        let running = gateway::start(&gateway::config(&url)).await;
        let base = format!("http://{}", gateway::http_of(&running));
        let c = Client {
            http: http.clone(),
            base: base.clone(),
            backend,
        };
        use reqwest::Method;
        let patient = json!({"resourceType": "Patient", "id": "pp1", "gender": "female",
            "name": [{"family": "Doe", "given": ["Jane"]}]});
        let (s, _, _) = c
            .send(
                Method::PUT,
                "/fhir/Patient/pp1",
                Some(patient.to_string()),
                &[],
            )
            .await;
        assert_eq!(s, 201, "{backend}");
        let patch = |path: &str, body: Value, if_match: Option<&str>| {
            let mut rb = http
                .patch(format!("{base}{path}"))
                .header("content-type", "application/json-patch+json")
                .body(body.to_string());
            if let Some(m) = if_match {
                rb = rb.header("if-match", m);
            }
            async move {
                let r = rb.send().await.unwrap_or_else(|e| panic!("{e}"));
                let status = r.status().as_u16();
                let etag = r
                    .headers()
                    .get("etag")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let v: Value = r.json().await.unwrap_or(Value::Null);
                (status, etag, v)
            }
        };
        let (s, etag, v) = patch(
            "/fhir/Patient/pp1",
            json!([
                {"op": "test", "path": "/gender", "value": "female"},
                {"op": "replace", "path": "/gender", "value": "other"},
                {"op": "add", "path": "/telecom", "value": [{"system": "phone", "value": "555-0100"}]},
                {"op": "remove", "path": "/name/0/given"}
            ]),
            Some("W/\"1\""),
        )
        .await;
        assert_eq!(s, 200, "{backend}: {v}");
        assert_eq!(etag, "W/\"2\"", "{backend}");
        let (_, read) = c.get("/fhir/Patient/pp1").await;
        assert_eq!(read["gender"], "other", "{backend}: {read}");
        assert_eq!(read["telecom"][0]["value"], "555-0100", "{backend}: {read}");
        assert!(read["name"][0].get("given").is_none(), "{backend}: {read}");
        assert_eq!(read["meta"]["versionId"], "2", "{backend}: {read}");
        // Refusals.
        let cases = [
            (
                json!([{"op": "test", "path": "/gender", "value": "female"}]),
                None,
                "/fhir/Patient/pp1",
                422,
            ),
            (
                json!([{"op": "replace", "path": "/gender", "value": "male"}]),
                Some("W/\"1\""),
                "/fhir/Patient/pp1",
                412,
            ),
            (
                json!([{"op": "replace", "path": "/id", "value": "other"}]),
                None,
                "/fhir/Patient/pp1",
                422,
            ),
            (
                json!([{"op": "replace", "path": "/gender", "value": "banana"}]),
                None,
                "/fhir/Patient/pp1",
                422,
            ),
            (json!({"op": "nope"}), None, "/fhir/Patient/pp1", 400),
            (
                json!([{"op": "replace", "path": "/gender", "value": "male"}]),
                None,
                "/fhir/Patient/nobody",
                404,
            ),
        ];
        for (body, if_match, path, want) in cases {
            let (s, _, v) = patch(path, body.clone(), if_match).await;
            assert_eq!(s, want, "{backend}: {body}: {v}");
            assert_eq!(v["resourceType"], "OperationOutcome", "{backend}: {v}");
        }
        let (_, read) = c.get("/fhir/Patient/pp1").await;
        assert_eq!(
            read["meta"]["versionId"], "2",
            "{backend}: refusals wrote nothing"
        );
        // Two patches at once, without If-Match: neither is lost (each is a versioned update of
        // the version it was applied to, applied again when the other won).
        let add = |v: &str| json!([{"op": "add", "path": "/telecom/-", "value": {"system": "email", "value": v}}]);
        let (a, b) = tokio::join!(
            patch("/fhir/Patient/pp1", add("a@example.org"), None),
            patch("/fhir/Patient/pp1", add("b@example.org"), None)
        );
        assert_eq!((a.0, b.0), (200, 200), "{backend}: {a:?} {b:?}");
        let (_, read) = c.get("/fhir/Patient/pp1").await;
        let telecoms: Vec<&str> = read["telecom"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["value"].as_str())
            .collect();
        assert_eq!(telecoms.len(), 3, "{backend}: {read}");
        assert!(
            telecoms.contains(&"a@example.org") && telecoms.contains(&"b@example.org"),
            "{backend}: {read}"
        );
        assert_eq!(read["meta"]["versionId"], "4", "{backend}: {read}");
        // FHIRPath Patch is not supported.
        let r = http
            .patch(format!("{base}/fhir/Patient/pp1"))
            .header("content-type", "application/fhir+json")
            .body(json!({"resourceType": "Parameters"}).to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status().as_u16(), 415, "{backend}");
        // Deleted: gone.
        let (s, _, _) = c.send(Method::DELETE, "/fhir/Patient/pp1", None, &[]).await;
        assert_eq!(s, 204, "{backend}");
        let (s, _, v) = patch(
            "/fhir/Patient/pp1",
            json!([{"op": "replace", "path": "/gender", "value": "male"}]),
            None,
        )
        .await;
        assert_eq!(s, 410, "{backend}: {v}");
        running.shutdown().await;
    }
}

/// Versioned updates (`If-Match`, `request.ifMatch`) on both stores: checked in the writer's
/// transaction, so of two updates from the same version exactly one wins, even sent at once; a
/// stale version is 412 and writes nothing (a transaction as a whole); a batch refuses
/// `ifMatch` in its entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioned_updates_refuse_a_stale_version() {
    let http = gateway::http_client();
    for (backend, url) in gateway::store_urls("fhir-versioned").await {
        let running = gateway::start(&gateway::config(&url)).await;
        let c = Client {
            http: http.clone(),
            base: format!("http://{}", gateway::http_of(&running)),
            backend,
        };
        use reqwest::Method;
        let patient = |family: &str| {
            json!({"resourceType": "Patient", "id": "vu1", "name": [{"family": family}]})
                .to_string()
        };
        let put = |family: &str, version: &str| {
            let c = &c;
            let body = patient(family);
            let version = version.to_string();
            async move {
                let h = [("if-match", version.as_str())];
                let headers: &[(&str, &str)] = if version.is_empty() { &[] } else { &h };
                c.send(Method::PUT, "/fhir/Patient/vu1", Some(body), headers)
                    .await
            }
        };
        assert_eq!(put("One", "").await.0, 201, "{backend}");
        let (s, h, _) = put("Two", "W/\"1\"").await;
        assert_eq!(s, 200, "{backend}");
        assert_eq!(header(&h, "etag"), "W/\"2\"", "{backend}");
        let (s, _, oo) = put("Stale", "W/\"1\"").await;
        assert_eq!(s, 412, "{backend}: {oo}");
        assert!(
            oo.to_string().contains("is at version 2"),
            "{backend}: {oo}"
        );
        let (_, read) = c.get("/fhir/Patient/vu1").await;
        assert_eq!(read["name"][0]["family"], "Two", "{backend}: {read}");
        // Two updates from version 2 at once: one wins, one is refused.
        let (a, b) = tokio::join!(put("Three-a", "W/\"2\""), put("Three-b", "W/\"2\""));
        let mut codes = vec![a.0, b.0];
        codes.sort_unstable();
        assert_eq!(codes, vec![200, 412], "{backend}: {a:?} {b:?}");
        let (_, read) = c.get("/fhir/Patient/vu1").await;
        assert_eq!(read["meta"]["versionId"], "3", "{backend}: {read}");
        // DELETE: stale, then current.
        let (s, _, _) = c
            .send(
                Method::DELETE,
                "/fhir/Patient/vu1",
                None,
                &[("if-match", "W/\"1\"")],
            )
            .await;
        assert_eq!(s, 412, "{backend}");
        let (s, _, _) = c
            .send(
                Method::DELETE,
                "/fhir/Patient/vu1",
                None,
                &[("if-match", "W/\"3\"")],
            )
            .await;
        assert_eq!(s, 204, "{backend}");
        // A transaction with a stale entry writes none of its entries.
        let tx = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "vu2"}, "request": {"method": "PUT", "url": "Patient/vu2"}},
            {"resource": {"resourceType": "Patient", "id": "vu3"}, "request": {"method": "PUT", "url": "Patient/vu3", "ifMatch": "W/\"7\""}}
        ]});
        let (s, _, oo) = c
            .send(Method::POST, "/fhir", Some(tx.to_string()), &[])
            .await;
        assert_eq!(s, 412, "{backend}: {oo}");
        let (s, _) = c.get("/fhir/Patient/vu2").await;
        assert_eq!(s, 404, "{backend}: nothing of the transaction was written");
        // A batch does not take ifMatch; a bad If-Match header is 400.
        let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": {"resourceType": "Patient", "id": "vu4"}, "request": {"method": "PUT", "url": "Patient/vu4", "ifMatch": "W/\"1\""}}
        ]});
        let (_, _, resp) = c
            .send(Method::POST, "/fhir", Some(batch.to_string()), &[])
            .await;
        assert!(
            resp["entry"][0]["response"]["status"]
                .as_str()
                .is_some_and(|s| s.starts_with("400")),
            "{backend}: {resp}"
        );
        let (s, _, _) = c
            .send(
                Method::PUT,
                "/fhir/Patient/vu5",
                Some(json!({"resourceType": "Patient", "id": "vu5"}).to_string()),
                &[("if-match", "yesterday")],
            )
            .await;
        assert_eq!(s, 400, "{backend}");
        running.shutdown().await;
    }
}
