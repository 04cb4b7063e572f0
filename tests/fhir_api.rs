//! The FHIR facade (`/fhir`) over real sockets with a real HTTP client, on both store backends:
//! the developer corpus is ingested, then every search is checked against what the conversions
//! produced (computed here independently from the returned Bundles).

mod gateway;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const ER7: &str = "x-application/hl7-v2+er7";

type Key = (String, String);

struct Fhir {
    http: reqwest::Client,
    base: String,
    backend: &'static str,
}

impl Fhir {
    /// The first `ty` of the corpus output, once `ty?patient=` has been checked to find exactly
    /// the `ty`s whose subject is that resource's patient.
    async fn first_found_by_patient<'a>(
        &self,
        all: &'a BTreeMap<Key, Value>,
        ty: &str,
    ) -> (&'a Key, &'a Value) {
        let backend = &self.backend;
        let (key, first) = of_type(all, ty)
            .next()
            .unwrap_or_else(|| panic!("{backend}: no {ty} in the corpus output"));
        let patient = subject_of(first).unwrap_or_default();
        let want = keys_where(all, ty, |r| {
            subject_of(r).as_deref() == Some(patient.as_str())
        });
        assert_eq!(
            self.all(&format!("{ty}?patient={}", enc(&patient))).await,
            want,
            "{backend}: {ty} by patient"
        );
        (key, first)
    }

    async fn get_full(
        &self,
        url: &str,
        headers: &[(&str, &str)],
    ) -> (u16, reqwest::header::HeaderMap, String) {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            format!("{}/fhir/{url}", self.base)
        };
        let mut rb = self.http.get(&url);
        for (k, v) in headers {
            rb = rb.header(*k, *v);
        }
        let r = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("{}: GET {url}: {e}", self.backend));
        let status = r.status().as_u16();
        let h = r.headers().clone();
        (status, h, r.text().await.unwrap_or_default())
    }

    async fn get(&self, url: &str) -> (u16, Value) {
        let (s, _, text) = self.get_full(url, &[]).await;
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: {url}: not JSON ({e}): {text}", self.backend));
        (s, v)
    }

    /// A search that must succeed; the Bundle.
    async fn search(&self, url: &str) -> Value {
        let (s, v) = self.get(url).await;
        assert_eq!(s, 200, "{}: {url}: {v}", self.backend);
        assert_eq!(v["type"], "searchset", "{}: {url}", self.backend);
        v
    }

    /// Keys of the `match` entries of one page.
    fn matches(bundle: &Value) -> Vec<Key> {
        entries(bundle, "match")
    }

    /// Every match of a search, following `next` links; asserts no resource is seen twice.
    async fn all(&self, url: &str) -> BTreeSet<Key> {
        let mut seen = BTreeSet::new();
        let mut next = Some(url.to_string());
        let mut pages = 0;
        while let Some(u) = next {
            let b = self.search(&u).await;
            for k in Self::matches(&b) {
                assert!(
                    seen.insert(k.clone()),
                    "{}: {url}: {k:?} seen twice",
                    self.backend
                );
            }
            next = b["link"].as_array().and_then(|l| {
                l.iter()
                    .find(|x| x["relation"] == "next")
                    .and_then(|x| x["url"].as_str())
                    .map(String::from)
            });
            pages += 1;
            assert!(pages < 10_000, "{url}: paging does not end");
        }
        seen
    }
}

fn entries(bundle: &Value, mode: &str) -> Vec<Key> {
    bundle["entry"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter(|x| x["search"]["mode"] == mode)
                .map(|x| {
                    (
                        x["resource"]["resourceType"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                        x["resource"]["id"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// POST every corpus message; the Bundles of the accepted ones, in order.
async fn ingest(http: &reqwest::Client, base: &str, files: &[std::path::PathBuf]) -> Vec<Value> {
    let mut out = Vec::new();
    for f in files {
        let body = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let r = http
            .post(format!("{base}/v2/messages"))
            .header("content-type", ER7)
            .header("accept", "application/fhir+json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let status = r.status().as_u16();
        let v: Value =
            serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or(Value::Null);
        if status == 200 && v["resourceType"] == "Bundle" {
            out.push(v);
        }
    }
    out
}

/// The current content of every resource: the last Bundle naming it wins.
fn current(bundles: &[Value]) -> BTreeMap<Key, Value> {
    let mut m = BTreeMap::new();
    for b in bundles {
        for e in b["entry"].as_array().into_iter().flatten() {
            let r = &e["resource"];
            if let (Some(t), Some(i)) = (r["resourceType"].as_str(), r["id"].as_str()) {
                m.insert((t.to_string(), i.to_string()), r.clone());
            }
        }
    }
    m
}

fn of_type<'a>(
    all: &'a BTreeMap<Key, Value>,
    ty: &str,
) -> impl Iterator<Item = (&'a Key, &'a Value)> {
    all.iter().filter(move |(k, _)| k.0 == ty)
}

fn keys_where(all: &BTreeMap<Key, Value>, ty: &str, f: impl Fn(&Value) -> bool) -> BTreeSet<Key> {
    of_type(all, ty)
        .filter(|(_, v)| f(v))
        .map(|(k, _)| k.clone())
        .collect()
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn codings(v: &Value) -> Vec<(String, String)> {
    v["coding"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|x| {
                    Some((
                        x["system"].as_str().unwrap_or("").to_string(),
                        x["code"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn subject_of(v: &Value) -> Option<String> {
    v["subject"]["reference"]
        .as_str()
        .or_else(|| v["patient"]["reference"].as_str())
        .map(String::from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_over_the_developer_corpus() {
    let http = gateway::http_client();
    let mut files: Vec<_> = std::fs::read_dir(gateway::root().join("tests/corpus/fhir-converter"))
        .unwrap_or_else(|e| panic!("{e}"))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "hl7"))
        .collect();
    files.sort();
    for (backend, url) in gateway::store_urls("fhir-search").await {
        let running = gateway::start(&gateway::config(&url)).await;
        let base = format!(
            "http://{}",
            running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
        );
        let bundles = ingest(&http, &base, &files).await;
        assert!(
            bundles.len() > 100,
            "{backend}: only {} converted",
            bundles.len()
        );
        let all = current(&bundles);
        let f = Fhir {
            http: http.clone(),
            base: base.clone(),
            backend,
        };

        // Counts per type, and a full walk of each type in small pages: every resource once.
        for ty in [
            "Patient",
            "Encounter",
            "Observation",
            "Immunization",
            "DiagnosticReport",
            "Practitioner",
        ] {
            let want: BTreeSet<Key> = of_type(&all, ty).map(|(k, _)| k.clone()).collect();
            assert!(!want.is_empty(), "{backend}: no {ty} in the corpus output");
            let b = f.search(&format!("{ty}?_summary=count")).await;
            assert_eq!(b["total"], want.len(), "{backend}: {ty} count");
            assert!(
                b.get("entry").is_none(),
                "{backend}: _summary=count has no entries"
            );
            assert_eq!(
                f.all(&format!("{ty}?_count=7")).await,
                want,
                "{backend}: {ty} paging"
            );
        }
        // Sorted paging (newest effective date first) also walks each Observation once.
        let obs: BTreeSet<Key> = of_type(&all, "Observation")
            .map(|(k, _)| k.clone())
            .collect();
        assert_eq!(
            f.all("Observation?_sort=-date&_count=9").await,
            obs,
            "{backend}: sorted paging"
        );
        let page = f.search("Observation?_sort=date&_count=1000").await;
        let dates: Vec<String> = page["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| {
                e["resource"]["effectiveDateTime"]
                    .as_str()
                    .map(|d| d.chars().take(10).collect())
            })
            .collect();
        assert!(
            dates.windows(2).all(|w| w[0] <= w[1]),
            "{backend}: _sort=date order {dates:?}"
        );

        // Patient by every identifier (system|value): the patient is found, and every hit has it.
        let mut checked = 0;
        for (k, p) in of_type(&all, "Patient") {
            for id in p["identifier"].as_array().into_iter().flatten() {
                let (Some(sys), Some(val)) = (id["system"].as_str(), id["value"].as_str()) else {
                    continue;
                };
                let want = keys_where(&all, "Patient", |q| {
                    q["identifier"].as_array().into_iter().flatten().any(|i| {
                        i["system"].as_str() == Some(sys) && i["value"].as_str() == Some(val)
                    })
                });
                assert!(want.contains(k));
                let got = f
                    .all(&format!(
                        "Patient?identifier={}",
                        enc(&format!("{sys}|{val}"))
                    ))
                    .await;
                assert_eq!(got, want, "{backend}: identifier {sys}|{val}");
                checked += 1;
            }
        }
        assert!(
            checked > 5,
            "{backend}: only {checked} identifiers with a system"
        );
        // Value alone and `|value` (no system).
        let (k, p) = of_type(&all, "Patient")
            .find(|(_, p)| p["identifier"][0]["value"].is_string())
            .unwrap_or_else(|| panic!("no identifier"));
        let val = p["identifier"][0]["value"].as_str().unwrap_or("");
        assert!(
            f.all(&format!("Patient?identifier={}", enc(val)))
                .await
                .contains(k)
        );
        let no_sys = keys_where(&all, "Patient", |q| {
            q["identifier"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|i| i["system"].is_null() && i["value"] == val)
        });
        assert_eq!(
            f.all(&format!("Patient?identifier=%7C{}", enc(val))).await,
            no_sys,
            "{backend}: |value"
        );

        // Names: family prefix (case-insensitive), :exact, :contains; name matches any part.
        let family = p["name"][0]["family"]
            .as_str()
            .unwrap_or_else(|| panic!("no family"));
        let prefix: String = family.chars().take(3).collect::<String>().to_lowercase();
        let want = keys_where(&all, "Patient", |q| {
            q["name"].as_array().into_iter().flatten().any(|n| {
                n["family"]
                    .as_str()
                    .is_some_and(|x| x.to_lowercase().starts_with(&prefix))
            })
        });
        assert_eq!(
            f.all(&format!("Patient?family={}", enc(&prefix.to_uppercase())))
                .await,
            want,
            "{backend}: family"
        );
        // The whole name is its own prefix (the search starts from the index range at it).
        let whole = family.to_lowercase();
        let want_whole = keys_where(&all, "Patient", |q| {
            q["name"].as_array().into_iter().flatten().any(|n| {
                n["family"]
                    .as_str()
                    .is_some_and(|x| x.to_lowercase().starts_with(&whole))
            })
        });
        assert!(!want_whole.is_empty());
        assert_eq!(
            f.all(&format!("Patient?family={}", enc(&whole))).await,
            want_whole,
            "{backend}: family={whole}"
        );
        let want_exact = keys_where(&all, "Patient", |q| {
            q["name"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|n| n["family"].as_str() == Some(family))
        });
        assert_eq!(
            f.all(&format!("Patient?family:exact={}", enc(family)))
                .await,
            want_exact
        );
        assert!(
            f.all(&format!(
                "Patient?family:exact={}",
                enc(&family.to_lowercase())
            ))
            .await
            .len()
                <= want_exact.len()
        );
        let mid: String = family
            .chars()
            .skip(1)
            .take(3)
            .collect::<String>()
            .to_lowercase();
        let want_contains = keys_where(&all, "Patient", |q| {
            q["name"].as_array().into_iter().flatten().any(|n| {
                n["family"]
                    .as_str()
                    .is_some_and(|x| x.to_lowercase().contains(&mid))
            })
        });
        assert_eq!(
            f.all(&format!("Patient?family:contains={}", enc(&mid)))
                .await,
            want_contains
        );
        let given = keys_where(&all, "Patient", |q| {
            q["name"].as_array().into_iter().flatten().any(|n| {
                n["given"].as_array().into_iter().flatten().any(|g| {
                    g.as_str()
                        .is_some_and(|g| g.to_lowercase().starts_with("a"))
                })
            })
        });
        assert_eq!(f.all("Patient?given=a").await, given, "{backend}: given");
        assert!(
            f.all(&format!("Patient?name={}", enc(&prefix)))
                .await
                .is_superset(&want)
        );

        // Birth date ranges and equality (partial dates: a year matches within it).
        let want = keys_where(&all, "Patient", |q| {
            q["birthDate"]
                .as_str()
                .is_some_and(|d| ("1960-01-01".."1990").contains(&d))
        });
        assert!(!want.is_empty());
        assert_eq!(
            f.all("Patient?birthdate=ge1960-01-01&birthdate=lt1990")
                .await,
            want,
            "{backend}: birthdate range"
        );
        let some = p["birthDate"].as_str().unwrap_or("1900");
        let year: String = some.chars().take(4).collect();
        let want = keys_where(&all, "Patient", |q| {
            q["birthDate"]
                .as_str()
                .is_some_and(|d| d.starts_with(&year))
        });
        assert_eq!(
            f.all(&format!("Patient?birthdate={year}")).await,
            want,
            "{backend}: birthdate={year}"
        );
        let want = keys_where(&all, "Patient", |q| {
            q["birthDate"]
                .as_str()
                .is_some_and(|d| !d.starts_with(&year))
        });
        assert_eq!(
            f.all(&format!("Patient?birthdate=ne{year}")).await,
            want,
            "{backend}: ne"
        );

        // Prefix boundaries on a patient's own birth date.
        let (bk, bd) = of_type(&all, "Patient")
            .find_map(|(k, q)| {
                q["birthDate"]
                    .as_str()
                    .filter(|d| d.len() == 10)
                    .map(|d| (k.clone(), d.to_string()))
            })
            .unwrap_or_else(|| panic!("no full birth date"));
        for (prefix, included) in [
            ("eq", true),
            ("ge", true),
            ("le", true),
            ("gt", false),
            ("lt", false),
            ("ne", false),
        ] {
            let got = f.all(&format!("Patient?birthdate={prefix}{bd}")).await;
            assert_eq!(
                got.contains(&bk),
                included,
                "{backend}: birthdate={prefix}{bd}"
            );
        }
        // Gender, telecom, postal code.
        for g in ["female", "male"] {
            let want = keys_where(&all, "Patient", |q| q["gender"] == g);
            assert_eq!(
                f.all(&format!("Patient?gender={g}")).await,
                want,
                "{backend}: gender {g}"
            );
        }
        if let Some((_, q)) =
            of_type(&all, "Patient").find(|(_, q)| q["address"][0]["postalCode"].is_string())
        {
            let pc = q["address"][0]["postalCode"].as_str().unwrap_or("");
            let want = keys_where(&all, "Patient", |x| {
                x["address"].as_array().into_iter().flatten().any(|a| {
                    a["postalCode"]
                        .as_str()
                        .is_some_and(|c| c.to_lowercase().starts_with(&pc.to_lowercase()))
                })
            });
            assert_eq!(
                f.all(&format!("Patient?address-postalcode={}", enc(pc)))
                    .await,
                want
            );
        }
        if let Some((k, q)) =
            of_type(&all, "Patient").find(|(_, q)| q["telecom"][0]["value"].is_string())
        {
            let t = &q["telecom"][0];
            let v = format!(
                "{}|{}",
                t["system"].as_str().unwrap_or(""),
                t["value"].as_str().unwrap_or("")
            );
            assert!(
                f.all(&format!("Patient?telecom={}", enc(&v)))
                    .await
                    .contains(k),
                "{backend}: telecom {v}"
            );
        }

        // Observation code: system|code, code alone, system| (any code of the system).
        let mut freq: BTreeMap<(String, String), usize> = BTreeMap::new();
        for (_, o) in of_type(&all, "Observation") {
            for c in codings(&o["code"]) {
                *freq.entry(c).or_default() += 1;
            }
        }
        let ((sys, code), _) = freq
            .iter()
            .max_by_key(|(_, n)| **n)
            .unwrap_or_else(|| panic!("no codes"));
        let want = keys_where(&all, "Observation", |o| {
            codings(&o["code"]).contains(&(sys.clone(), code.clone()))
        });
        assert_eq!(
            f.all(&format!(
                "Observation?code={}",
                enc(&format!("{sys}|{code}"))
            ))
            .await,
            want,
            "{backend}: code"
        );
        let want_code = keys_where(&all, "Observation", |o| {
            codings(&o["code"]).iter().any(|(_, c)| c == code)
        });
        assert_eq!(
            f.all(&format!("Observation?code={}", enc(code))).await,
            want_code
        );
        let want_sys = keys_where(&all, "Observation", |o| {
            codings(&o["code"]).iter().any(|(s, _)| s == sys)
        });
        assert_eq!(
            f.all(&format!("Observation?code={}%7C", enc(sys))).await,
            want_sys
        );
        // Two codes OR-ed.
        let mut it = freq.keys();
        if let (Some(a), Some(b)) = (it.next(), it.next()) {
            let want = keys_where(&all, "Observation", |o| {
                let c = codings(&o["code"]);
                c.contains(a) || c.contains(b)
            });
            let q = format!(
                "{},{}",
                enc(&format!("{}|{}", a.0, a.1)),
                enc(&format!("{}|{}", b.0, b.1))
            );
            assert_eq!(
                f.all(&format!("Observation?code={q}")).await,
                want,
                "{backend}: OR"
            );
        }

        // Observation by patient (reference forms), date, status, category; chained identifier.
        let (pk, _) = of_type(&all, "Observation")
            .filter_map(|(_, o)| subject_of(o))
            .fold(BTreeMap::<String, usize>::new(), |mut m, s| {
                *m.entry(s).or_default() += 1;
                m
            })
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .unwrap_or_else(|| panic!("no subjects"));
        let pid = pk.trim_start_matches("Patient/").to_string();
        let want = keys_where(&all, "Observation", |o| {
            subject_of(o).as_deref() == Some(pk.as_str())
        });
        for q in [
            format!("Observation?patient={pid}"),
            format!("Observation?patient=Patient/{pid}"),
            format!("Observation?subject=Patient/{pid}"),
            format!("Observation?subject:Patient={pid}"),
            format!(
                "Observation?subject={}",
                enc(&format!("{base}/fhir/Patient/{pid}"))
            ),
        ] {
            assert_eq!(f.all(&q).await, want, "{backend}: {q}");
        }
        let want = keys_where(&all, "Observation", |o| {
            o["effectiveDateTime"].as_str().is_some_and(|d| d >= "2020")
                || o["effectivePeriod"]["start"]
                    .as_str()
                    .is_some_and(|d| d >= "2020")
        });
        assert_eq!(
            f.all("Observation?date=ge2020-01-01T00:00:00Z").await,
            want,
            "{backend}: date ge"
        );
        for st in ["final", "preliminary"] {
            let want = keys_where(&all, "Observation", |o| o["status"] == st);
            assert_eq!(
                f.all(&format!("Observation?status={st}")).await,
                want,
                "{backend}: status {st}"
            );
        }
        let want = keys_where(&all, "Observation", |o| {
            o["category"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| codings(c).iter().any(|(_, x)| x == "laboratory"))
        });
        assert_eq!(
            f.all("Observation?category=laboratory").await,
            want,
            "{backend}: category"
        );
        // Chain: Observations whose subject is a Patient with this identifier (a patient that
        // has an identifier with a system and observations; the corpus has several).
        let chained = of_type(&all, "Patient").find_map(|(k, p)| {
            let reference = format!("Patient/{}", k.1);
            let has_obs = of_type(&all, "Observation")
                .any(|(_, o)| subject_of(o).as_deref() == Some(reference.as_str()));
            let ident = p["identifier"].as_array().and_then(|a| {
                a.iter()
                    .find(|i| i["system"].is_string() && i["value"].is_string())
            })?;
            has_obs.then_some(ident)
        });
        assert!(
            chained.is_some(),
            "{backend}: no patient to test a chain with"
        );
        if let Some(ident) = chained {
            let token = format!(
                "{}|{}",
                ident["system"].as_str().unwrap_or(""),
                ident["value"].as_str().unwrap_or("")
            );
            let holders: BTreeSet<String> = keys_where(&all, "Patient", |q| {
                q["identifier"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|i| i["system"] == ident["system"] && i["value"] == ident["value"])
            })
            .into_iter()
            .map(|k| format!("Patient/{}", k.1))
            .collect();
            let want = keys_where(&all, "Observation", |o| {
                subject_of(o).is_some_and(|s| holders.contains(&s))
            });
            assert!(
                !want.is_empty(),
                "{backend}: the chain has observations to find"
            );
            assert_eq!(
                f.all(&format!(
                    "Observation?subject:Patient.identifier={}",
                    enc(&token)
                ))
                .await,
                want,
                "{backend}: chain"
            );
            assert_eq!(
                f.all(&format!("Observation?patient.identifier={}", enc(&token)))
                    .await,
                want
            );
        }
        // value-quantity around a value that is present.
        if let Some((k, o)) =
            of_type(&all, "Observation").find(|(_, o)| o["valueQuantity"]["value"].is_number())
        {
            let v = o["valueQuantity"]["value"].to_string();
            assert!(
                f.all(&format!("Observation?value-quantity={v}"))
                    .await
                    .contains(k),
                "{backend}: value-quantity={v}"
            );
            assert!(
                !f.all(&format!("Observation?value-quantity=gt{v}"))
                    .await
                    .contains(k)
            );
            assert!(
                f.all(&format!("Observation?value-quantity=ge{v}"))
                    .await
                    .contains(k)
            );
        }

        // _include / _revinclude.
        let b = f
            .search(&format!(
                "Observation?patient={pid}&_include=Observation:patient"
            ))
            .await;
        assert_eq!(
            entries(&b, "include"),
            vec![("Patient".to_string(), pid.clone())],
            "{backend}: _include"
        );
        let b = f
            .search(&format!(
                "Patient?_id={pid}&_revinclude=Observation:patient&_count=1000"
            ))
            .await;
        assert_eq!(
            Fhir::matches(&b),
            vec![("Patient".to_string(), pid.clone())]
        );
        let rev: BTreeSet<Key> = entries(&b, "include").into_iter().collect();
        let want = keys_where(&all, "Observation", |o| {
            subject_of(o).as_deref() == Some(pk.as_str())
        });
        assert_eq!(rev, want, "{backend}: _revinclude");
        let b = f.search("Encounter?_include=Encounter:*&_count=1000").await;
        let inc: BTreeSet<Key> = entries(&b, "include").into_iter().collect();
        for (_, e) in of_type(&all, "Encounter") {
            if let Some(s) = subject_of(e)
                && let Some((t, i)) = s.split_once('/')
                && all.contains_key(&(t.to_string(), i.to_string()))
            {
                assert!(
                    inc.contains(&(t.to_string(), i.to_string())),
                    "{backend}: Encounter:* misses {s}"
                );
            }
        }

        // Encounter, Immunization, DiagnosticReport parameters.
        for (ty, param, path) in [
            ("Encounter", "class", "class"),
            ("Immunization", "vaccine-code", "vaccineCode"),
            ("DiagnosticReport", "code", "code"),
            ("DocumentReference", "type", "type"),
        ] {
            let (k, r) = of_type(&all, ty)
                .find(|(_, r)| {
                    let c = if r[path]["code"].is_string() {
                        vec![(
                            r[path]["system"].as_str().unwrap_or("").to_string(),
                            r[path]["code"].as_str().unwrap_or("").to_string(),
                        )]
                    } else {
                        codings(&r[path])
                    };
                    !c.is_empty()
                })
                .unwrap_or_else(|| panic!("no {ty} with {path}"));
            let c = if r[path]["code"].is_string() {
                r[path]["code"].as_str().unwrap_or("").to_string()
            } else {
                codings(&r[path])[0].1.clone()
            };
            let got = f.all(&format!("{ty}?{param}={}", enc(&c))).await;
            assert!(got.contains(k), "{backend}: {ty}?{param}={c}");
        }
        for st in ["finished", "in-progress"] {
            let want = keys_where(&all, "Encounter", |e| e["status"] == st);
            assert_eq!(
                f.all(&format!("Encounter?status={st}")).await,
                want,
                "{backend}: Encounter status {st}"
            );
        }
        let want = keys_where(&all, "Immunization", |i| i["status"] == "completed");
        assert_eq!(f.all("Immunization?status=completed").await, want);
        let want = keys_where(&all, "Immunization", |i| {
            i["occurrenceDateTime"].as_str().is_some_and(|d| d < "2015")
        });
        assert_eq!(
            f.all("Immunization?date=lt2015").await,
            want,
            "{backend}: Immunization date"
        );

        // The appointments of the SIU samples: by patient (a participant), status and date.
        let (_, appt) = of_type(&all, "Appointment")
            .next()
            .unwrap_or_else(|| panic!("{backend}: no Appointment in the corpus output"));
        let patient = appt["participant"][0]["actor"]["reference"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(patient.starts_with("Patient/"), "{appt}");
        let takes_part = |a: &Value, who: &str| {
            a["participant"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|p| p["actor"]["reference"] == who))
        };
        let want = keys_where(&all, "Appointment", |a| takes_part(a, &patient));
        assert_eq!(
            f.all(&format!("Appointment?patient={}", enc(&patient)))
                .await,
            want,
            "{backend}: Appointment by patient"
        );
        let practitioner = appt["participant"]
            .as_array()
            .and_then(|ps| {
                ps.iter().find_map(|p| {
                    p["actor"]["reference"]
                        .as_str()
                        .filter(|r| r.starts_with("Practitioner/"))
                })
            })
            .unwrap_or_default()
            .to_string();
        let want = keys_where(&all, "Appointment", |a| takes_part(a, &practitioner));
        assert!(
            !want.is_empty(),
            "{backend}: an Appointment with a practitioner"
        );
        assert_eq!(
            f.all(&format!("Appointment?actor={}", enc(&practitioner)))
                .await,
            want,
            "{backend}: Appointment by actor"
        );
        // The samples reschedule and cancel the same appointments: the last status wins.
        let statuses: BTreeSet<String> = of_type(&all, "Appointment")
            .filter_map(|(_, a)| a["status"].as_str().map(String::from))
            .collect();
        for st in &statuses {
            let want = keys_where(&all, "Appointment", |a| a["status"] == st.as_str());
            assert_eq!(
                f.all(&format!("Appointment?status={st}")).await,
                want,
                "{backend}: Appointment status {st}"
            );
        }
        let year = appt["start"]
            .as_str()
            .unwrap_or("")
            .get(..4)
            .unwrap_or("")
            .to_string();
        assert!(!year.is_empty(), "{backend}: an Appointment has a start");
        let want = keys_where(&all, "Appointment", |a| {
            a["start"].as_str().is_some_and(|s| s.starts_with(&year))
        });
        assert_eq!(
            f.all(&format!("Appointment?date={year}")).await,
            want,
            "{backend}: Appointment date {year}"
        );

        // The medication orders of the RDE samples: by patient, code and intent.
        f.first_found_by_patient(&all, "MedicationRequest").await;
        let (mr_key, mr) = of_type(&all, "MedicationRequest")
            .find(|(_, m)| m.get("medicationCodeableConcept").is_some())
            .unwrap_or_else(|| panic!("{backend}: a MedicationRequest with a coded drug"));
        let (system, code) = codings(&mr["medicationCodeableConcept"])
            .into_iter()
            .next()
            .unwrap_or_default();
        assert!(
            f.all(&format!(
                "MedicationRequest?code={}",
                enc(&format!("{system}|{code}"))
            ))
            .await
            .contains(mr_key),
            "{backend}: MedicationRequest by code"
        );
        // A compound order names a Medication: found by the chain `medication.code`.
        let (cx_key, cx) = of_type(&all, "MedicationRequest")
            .find(|(_, m)| m.get("medicationReference").is_some())
            .unwrap_or_else(|| panic!("{backend}: a compound MedicationRequest (RXC)"));
        let med_ref = cx["medicationReference"]["reference"]
            .as_str()
            .unwrap_or("");
        let med = med_ref
            .split_once('/')
            .and_then(|(t, id)| all.get(&(t.to_string(), id.to_string())))
            .unwrap_or_else(|| panic!("{backend}: {med_ref} is stored"));
        let (system, code) = codings(&med["code"]).into_iter().next().unwrap_or_default();
        let found = f
            .all(&format!(
                "MedicationRequest?medication.code={}",
                enc(&format!("{system}|{code}"))
            ))
            .await;
        assert!(
            found.contains(cx_key),
            "{backend}: compound by medication.code: {found:?}"
        );
        assert!(
            !found.contains(mr_key),
            "{backend}: a coded drug names no Medication"
        );
        let want = keys_where(&all, "MedicationRequest", |m| m["intent"] == "filler-order");
        assert!(!want.is_empty(), "{backend}: an encoded (filler) order");
        assert_eq!(
            f.all("MedicationRequest?intent=filler-order").await,
            want,
            "{backend}: MedicationRequest intent"
        );

        // The dispenses of the RDS samples: by patient and by the prescription they fill.
        let (md_key, md) = f.first_found_by_patient(&all, "MedicationDispense").await;
        let prescription = md["authorizingPrescription"][0]["reference"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            f.all(&format!(
                "MedicationDispense?prescription={}",
                enc(&prescription)
            ))
            .await
            .contains(md_key),
            "{backend}: MedicationDispense by prescription"
        );

        // The charges of the DFT samples: by patient, code, account and date.
        let (ci_key, ci) = f.first_found_by_patient(&all, "ChargeItem").await;
        let code = ci["code"]["coding"][0]["code"].as_str().unwrap_or_default();
        let want = keys_where(&all, "ChargeItem", |c| {
            c["code"]["coding"][0]["code"] == code
        });
        assert_eq!(
            f.all(&format!("ChargeItem?code={}", enc(code))).await,
            want,
            "{backend}: ChargeItem by code"
        );
        let account = ci["account"][0]["reference"].as_str().unwrap_or_default();
        assert!(
            f.all(&format!("ChargeItem?account={}", enc(account)))
                .await
                .contains(ci_key),
            "{backend}: ChargeItem by account"
        );
        let want = keys_where(&all, "ChargeItem", |c| {
            c["occurrenceDateTime"]
                .as_str()
                .is_some_and(|d| d >= "2019")
        });
        assert!(!want.is_empty(), "{backend}: charges since 2019");
        assert_eq!(
            f.all("ChargeItem?occurrence=ge2019").await,
            want,
            "{backend}: ChargeItem occurrence"
        );

        // The documents of the MDM samples: by patient, master identifier, status and date.
        f.first_found_by_patient(&all, "DocumentReference").await;
        // An MDM document (TXA-12); those sent with orders (OBX ED/RP) have none.
        let (doc_key, doc) = of_type(&all, "DocumentReference")
            .find(|(_, d)| d["masterIdentifier"]["value"].is_string())
            .unwrap_or_else(|| panic!("{backend}: no document with a master identifier"));
        let master = doc["masterIdentifier"]["value"].as_str().unwrap_or("");
        assert!(
            f.all(&format!("DocumentReference?identifier={}", enc(master)))
                .await
                .contains(doc_key),
            "{backend}: DocumentReference by master identifier"
        );
        let want = keys_where(&all, "DocumentReference", |d| d["status"] == "current");
        assert_eq!(
            f.all("DocumentReference?status=current").await,
            want,
            "{backend}: DocumentReference status"
        );
        let want = keys_where(&all, "DocumentReference", |d| {
            d["date"].as_str().is_some_and(|x| x >= "2011")
        });
        assert!(!want.is_empty(), "{backend}: documents dated after 2010");
        assert_eq!(
            f.all("DocumentReference?date=gt2010").await,
            want,
            "{backend}: DocumentReference date"
        );

        // _elements, _lastUpdated, _id.
        let b = f.search("Patient?_elements=gender&_count=3").await;
        for e in b["entry"].as_array().into_iter().flatten() {
            let keys: BTreeSet<&str> = e["resource"]
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            assert!(
                keys.is_subset(&BTreeSet::from(["resourceType", "id", "meta", "gender"])),
                "{keys:?}"
            );
            assert!(
                e["resource"]["meta"]["tag"]
                    .to_string()
                    .contains("SUBSETTED")
            );
        }
        // _summary=data: everything but the narrative; _summary=text: the narrative, id, meta
        // and the mandatory elements; _summary=true is not supported (ignored and reported).
        let full = f.search("Observation?_sort=_lastUpdated&_count=4").await;
        let data = f
            .search("Observation?_sort=_lastUpdated&_count=4&_summary=data")
            .await;
        let keys = |b: &Value| -> Vec<BTreeSet<String>> {
            b["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    e["resource"]
                        .as_object()
                        .map(|o| o.keys().filter(|k| *k != "text").cloned().collect())
                        .unwrap_or_default()
                })
                .collect()
        };
        assert_eq!(keys(&data), keys(&full), "{backend}: _summary=data");
        assert!(
            data["entry"][0]["resource"]["meta"]["tag"]
                .to_string()
                .contains("SUBSETTED")
        );
        let text = f.search("Observation?_count=4&_summary=text").await;
        for k in keys(&text) {
            assert!(
                k.is_subset(&BTreeSet::from(
                    ["resourceType", "id", "meta", "status", "code"].map(String::from)
                )) && k.contains("status"),
                "{backend}: _summary=text {k:?}"
            );
        }
        let b = f.search("Patient?_summary=true&_count=1").await;
        assert!(
            !b["link"].to_string().contains("_summary")
                && b["entry"].to_string().contains("_summary=true"),
            "{backend}: _summary=true ignored and reported: {b}"
        );
        let (s, _, _) = f
            .get_full("Patient?_summary=true", &[("prefer", "handling=strict")])
            .await;
        assert_eq!(s, 400, "{backend}: _summary=true under strict handling");
        // The mandatory elements come whether asked for or not: an Observation's status and code.
        let b = f
            .search("Observation?_elements=valueQuantity&_count=5")
            .await;
        let entries: Vec<&Value> = b["entry"].as_array().into_iter().flatten().collect();
        assert!(!entries.is_empty(), "{backend}: observations");
        for e in entries {
            let r = &e["resource"];
            assert!(
                r["status"].is_string() && r["code"].is_object(),
                "{backend}: _elements keeps mandatory elements: {r}"
            );
            assert!(r.get("subject").is_none(), "{backend}: {r}");
        }
        // A primitive's extensions come with it: PID-7's birth time (patient-birthTime on
        // `_birthDate`) with `birthDate`.
        let b = f.search("Patient?_elements=birthDate&_count=500").await;
        let entries: Vec<&Value> = b["entry"].as_array().into_iter().flatten().collect();
        assert!(
            entries
                .iter()
                .any(|e| e["resource"]["_birthDate"]["extension"][0]["url"]
                    == "http://hl7.org/fhir/StructureDefinition/patient-birthTime"),
            "{backend}: a birth time with _elements=birthDate"
        );
        for e in entries {
            let keys: BTreeSet<&str> = e["resource"]
                .as_object()
                .map(|o| o.keys().map(String::as_str).collect())
                .unwrap_or_default();
            assert!(
                keys.is_subset(&BTreeSet::from([
                    "resourceType",
                    "id",
                    "meta",
                    "birthDate",
                    "_birthDate"
                ])),
                "{keys:?}"
            );
        }
        assert_eq!(
            f.all("Patient?_lastUpdated=gt2000-01-01").await.len(),
            of_type(&all, "Patient").count()
        );
        assert!(f.all("Patient?_lastUpdated=lt2000-01-01").await.is_empty());
        // Around one patient's own lastUpdated instant (the condition reads the resource's row).
        let read: Value = serde_json::from_str(
            &http
                .get(format!("{base}/fhir/Patient/{pid}"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .text()
                .await
                .unwrap_or_default(),
        )
        .unwrap_or(Value::Null);
        let at = read["meta"]["lastUpdated"]
            .as_str()
            .unwrap_or_default()
            .replace('+', "%2B");
        assert!(
            !at.is_empty(),
            "{backend}: Patient/{pid} has meta.lastUpdated"
        );
        let me: Key = ("Patient".to_string(), pid.clone());
        for (q, included) in [
            ("ge", true),
            ("le", true),
            ("eq", true),
            ("gt", false),
            ("lt", false),
        ] {
            let got = f.all(&format!("Patient?_lastUpdated={q}{at}")).await;
            assert_eq!(
                got.contains(&me),
                included,
                "{backend}: _lastUpdated={q}{at}"
            );
        }
        assert_eq!(f.all(&format!("Patient?_id={pid}")).await.len(), 1);

        // POST _search equals GET.
        let r = http
            .post(format!("{base}/fhir/Observation/_search"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("patient={pid}&_count=1000"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let v: Value =
            serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or(Value::Null);
        let got: BTreeSet<Key> = Fhir::matches(&v).into_iter().collect();
        let want = keys_where(&all, "Observation", |o| {
            subject_of(o).as_deref() == Some(pk.as_str())
        });
        assert_eq!(got, want, "{backend}: POST _search");

        // Unknown parameters: ignored with a warning (lenient), 400 under strict; bad values 400.
        let b = f.search("Patient?bogus=1&_summary=count").await;
        assert_eq!(b["total"], of_type(&all, "Patient").count());
        let outcome = b["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["search"]["mode"] == "outcome");
        assert!(
            outcome.is_some_and(|o| o["resource"].to_string().contains("bogus")),
            "{backend}: lenient search reports what it ignored: {b}"
        );
        // The links name the parameters the search used, not the ignored one.
        let b = f.search("Patient?bogus=1&gender=female&_count=1").await;
        for l in b["link"].as_array().into_iter().flatten() {
            let url = l["url"].as_str().unwrap_or("");
            assert!(
                !url.contains("bogus") && url.contains("gender=female"),
                "{backend}: {} link {url}",
                l["relation"]
            );
        }
        assert!(
            b["link"].to_string().contains("\"next\""),
            "{backend}: more than one female patient, so a next link: {b}"
        );
        let (s, _, text) = f
            .get_full("Patient?bogus=1", &[("prefer", "handling=strict")])
            .await;
        assert_eq!(s, 400, "{text}");
        assert!(
            text.contains("OperationOutcome") && text.contains("bogus"),
            "{text}"
        );
        for bad in [
            "Patient?birthdate=1980-13",
            "Patient?_count=x",
            "Observation?patient=Encounter/1",
            "Patient?_sort=name",
        ] {
            let (s, v) = f.get(bad).await;
            assert_eq!(
                (s, v["resourceType"].as_str()),
                (400, Some("OperationOutcome")),
                "{backend}: {bad}: {v}"
            );
        }
        // Not found, unknown type, XML: OperationOutcomes with 404, 404, 406.
        for (u, want) in [
            ("Patient/nope", 404),
            ("Foo/1", 404),
            ("Patient?_format=xml", 406),
            ("Patient/nope/_history/1", 404),
        ] {
            let (s, v) = f.get(u).await;
            assert_eq!(
                (s, v["resourceType"].as_str()),
                (want, Some("OperationOutcome")),
                "{backend}: {u}"
            );
        }

        // The CapabilityStatement lists every parameter searched above, and nothing unsupported.
        let (s, cs) = f.get("metadata").await;
        assert_eq!(s, 200);
        assert_eq!(cs["fhirVersion"], "4.0.1");
        let patient_params: BTreeSet<&str> = cs["rest"][0]["resource"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["type"] == "Patient")
            .map(|r| {
                r["searchParam"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["name"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            patient_params,
            BTreeSet::from([
                "_id",
                "_lastUpdated",
                "identifier",
                "name",
                "family",
                "given",
                "birthdate",
                "gender",
                "address-postalcode",
                "telecom"
            ])
        );

        // It lists every resource type the conversions produced; other R4 types answer (empty),
        // non-types 404.
        let listed: BTreeSet<&str> = cs["rest"][0]["resource"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["type"].as_str())
            .collect();
        for (ty, _) in all.keys() {
            assert!(
                listed.contains(ty.as_str()),
                "{backend}: {ty} not in the CapabilityStatement"
            );
        }
        let b = f.search("Goal?_summary=count").await;
        assert_eq!(b["total"], 0);

        // gzip when asked.
        let (s, h, _) = f
            .get_full("Observation?_count=100", &[("accept-encoding", "gzip")])
            .await;
        assert_eq!(s, 200);
        assert_eq!(
            h.get("content-encoding").and_then(|v| v.to_str().ok()),
            Some("gzip")
        );

        running.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_history_etags_everything_and_deletes() {
    let http = gateway::http_client();
    let golden = gateway::root().join("tests/golden");
    for (backend, url) in gateway::store_urls("fhir-history").await {
        let running = gateway::start(&gateway::config(&url)).await;
        let base = format!(
            "http://{}",
            running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
        );
        let f = Fhir {
            http: http.clone(),
            base: base.clone(),
            backend,
        };
        let a01 = ingest(&http, &base, &[golden.join("adt_a01.hl7")]).await;
        let a08 = ingest(&http, &base, &[golden.join("adt_a08_update.hl7")]).await;
        assert_eq!((a01.len(), a08.len()), (1, 1), "{backend}");
        let p1 = of_type(&current(&a01), "Patient")
            .map(|(k, v)| (k.clone(), v.clone()))
            .next()
            .unwrap_or_else(|| panic!("no Patient"));
        let p2 = current(&a08)
            .get(&p1.0)
            .cloned()
            .unwrap_or_else(|| panic!("A08 updates another patient"));
        assert_ne!(p1.1, p2, "the A08 changes the patient");
        let id = p1.0.1.clone();

        // Read: version 2, the A08's content, with ETag / Last-Modified / Content-Location.
        let (s, h, text) = f.get_full(&format!("Patient/{id}"), &[]).await;
        assert_eq!(s, 200, "{backend}");
        let mut v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert_eq!(v["meta"]["versionId"], "2");
        assert!(
            v["meta"]["lastUpdated"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
        assert_eq!(h.get("etag").and_then(|x| x.to_str().ok()), Some("W/\"2\""));
        assert!(h.get("last-modified").is_some());
        assert!(
            h.get("content-location")
                .and_then(|x| x.to_str().ok())
                .is_some_and(|l| l.ends_with(&format!("/Patient/{id}/_history/2")))
        );
        if let Some(m) = v["meta"].as_object_mut() {
            m.remove("versionId");
            m.remove("lastUpdated");
            if m.is_empty() {
                v.as_object_mut().map(|o| o.remove("meta"));
            }
        }
        assert_eq!(v, p2, "{backend}: read returns what the A08 produced");
        let (s, _, body) = f
            .get_full(&format!("Patient/{id}"), &[("if-none-match", "W/\"2\"")])
            .await;
        assert_eq!((s, body.as_str()), (304, ""), "{backend}: If-None-Match");
        let (s, _, _) = f
            .get_full(&format!("Patient/{id}"), &[("if-none-match", "W/\"1\"")])
            .await;
        assert_eq!(s, 200);

        // vread both versions; history newest first.
        let (s, v1) = f.get(&format!("Patient/{id}/_history/1")).await;
        assert_eq!((s, &v1["meta"]["versionId"]), (200, &Value::from("1")));
        assert_eq!(v1["name"], p1.1["name"]);
        let (s, h) = f.get(&format!("Patient/{id}/_history")).await;
        assert_eq!(s, 200);
        assert_eq!(
            (h["type"].as_str(), h["total"].as_i64()),
            (Some("history"), Some(2))
        );
        let versions: Vec<&str> = h["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["resource"]["meta"]["versionId"].as_str())
            .collect();
        assert_eq!(versions, vec!["2", "1"], "{backend}");
        assert_eq!(h["entry"][1]["response"]["status"], "201");
        // Type history pages through every version exactly once.
        let (_, th) = f.get("Patient/_history?_count=1").await;
        assert_eq!(th["total"], 2);
        let next = th["link"]
            .as_array()
            .and_then(|l| l.iter().find(|x| x["relation"] == "next"))
            .and_then(|x| x["url"].as_str())
            .unwrap_or_else(|| panic!("no next"));
        let (_, th2) = f.get(next).await;
        assert_eq!(th2["entry"][0]["resource"]["meta"]["versionId"], "1");
        assert!(
            th2["link"]
                .as_array()
                .is_some_and(|l| l.iter().all(|x| x["relation"] != "next"))
        );

        // Resending the A08 under a new control id changes nothing: no version 3.
        let again = std::fs::read_to_string(golden.join("adt_a08_update.hl7"))
            .unwrap_or_default()
            .replace("MSG00002", "MSG00002B");
        let path = gateway::scratch("a08again").join("a08.hl7");
        std::fs::write(&path, &again).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ingest(&http, &base, &[path]).await.len(), 1);
        let (_, v) = f.get(&format!("Patient/{id}")).await;
        assert_eq!(
            v["meta"]["versionId"], "2",
            "{backend}: unchanged content makes no version"
        );

        // An access restriction (ARV) is a security label stored beside the server's meta.
        let restricted = again.replace("MSG00002B", "MSG00002C").replacen(
            "\rPV1|",
            "\rARV|1|A|DEM|PAT|Patient's request\rPV1|",
            1,
        );
        let path = gateway::scratch("a08arv").join("a08.hl7");
        std::fs::write(&path, restricted).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ingest(&http, &base, &[path]).await.len(), 1);
        let (_, v) = f.get(&format!("Patient/{id}")).await;
        assert_eq!(v["meta"]["versionId"], "3", "{backend}: {v}");
        assert_eq!(v["meta"]["security"][0]["code"], "DEM", "{backend}: {v}");
        assert_eq!(
            v["meta"]["security"][1]["system"], "http://terminology.hl7.org/CodeSystem/v2-0719",
            "{backend}: {v}"
        );

        // $everything: the patient, its encounter, and what they refer to; paged exactly once.
        let (s, ev) = f.get(&format!("Patient/{id}/$everything")).await;
        assert_eq!(s, 200, "{ev}");
        let everything: BTreeSet<Key> = entries(&ev, "match").into_iter().collect();
        let enc_key = of_type(&current(&a08), "Encounter")
            .map(|(k, _)| k.clone())
            .next()
            .unwrap_or_else(|| panic!("no Encounter"));
        assert!(
            everything.contains(&p1.0) && everything.contains(&enc_key),
            "{backend}: {everything:?}"
        );
        let all = current(&[a01[0].clone(), a08[0].clone()]);
        for (k, r) in &all {
            if subject_of(r).as_deref() == Some(&format!("Patient/{id}")) {
                assert!(
                    everything.contains(k),
                    "{backend}: $everything misses {k:?}"
                );
            }
        }
        assert_eq!(
            f.all(&format!("Patient/{id}/$everything?_count=2")).await,
            everything
        );
        let (_, none) = f
            .get(&format!("Patient/{id}/$everything?_since=2999-01-01"))
            .await;
        assert_eq!(none["total"], 0);
        let (s, _) = f.get("Patient/nope/$everything").await;
        assert_eq!(s, 404);

        // A delete (written through the store, as a transaction entry would be): 410, a DELETE in
        // the history, gone from searches.
        let store = v2fhir::store::Store::open(&url, v2fhir::store::Durability::ProcessCrash)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let raw = b"MSH|^~\\&|T|T|||20240101||ADT^A11|DEL1|P|2.5.1\r".to_vec();
        store
            .commit(&[v2fhir::store::NewMessage {
                received_at: 1,
                source: "test".into(),
                sending_application: "T".into(),
                sending_facility: "T".into(),
                control_id: "DEL1".into(),
                message_type: "ADT^A11".into(),
                charset: "UTF-8".into(),
                content_hash: v2fhir::ingest::content_hash(&raw),
                status: v2fhir::store::Status::Converted,
                ack_code: "AA".into(),
                raw,
                diagnostics: None,
                output: None,
                output_packed: None,
                ack: String::new(),
                resources: vec![v2fhir::store::NewResource::delete("Encounter", &enc_key.1)],
            }])
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        store.close().await;
        let (s, oo) = f.get(&format!("Encounter/{}", enc_key.1)).await;
        assert_eq!(
            (s, oo["resourceType"].as_str()),
            (410, Some("OperationOutcome")),
            "{backend}"
        );
        let (_, h) = f.get(&format!("Encounter/{}/_history", enc_key.1)).await;
        assert_eq!(h["entry"][0]["request"]["method"], "DELETE");
        assert!(
            f.all(&format!("Encounter?patient={id}")).await.is_empty(),
            "{backend}: deleted still found"
        );
        let (s, _) = f.get(&format!("Encounter/{}/_history/1", enc_key.1)).await;
        assert_eq!(s, 200, "{backend}: earlier versions stay readable");

        running.shutdown().await;
    }
}

/// Malformed and hostile requests get a 4xx OperationOutcome (or an empty result), never a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_answered_not_crashed() {
    let http = gateway::http_client();
    let url = format!(
        "sqlite://{}/v2fhir.db",
        gateway::scratch("fhir-hostile").display()
    );
    let running = gateway::start(&gateway::config(&url)).await;
    let base = format!(
        "http://{}",
        running.http_addr.unwrap_or_else(|| panic!("no HTTP"))
    );
    let golden = gateway::root().join("tests/golden");
    assert_eq!(
        ingest(&http, &base, &[golden.join("adt_a01.hl7")])
            .await
            .len(),
        1
    );
    let f = Fhir {
        http: http.clone(),
        base: base.clone(),
        backend: "sqlite",
    };
    for q in [
        "Patient?_page=abc",
        "Patient?_page=1,2,3",
        "Patient?_page=-9223372036854775808,9223372036854775807",
        "Patient?_count=99999999999999999999",
        "Patient?_count=0",
        "Patient?_elements=",
        "Patient?_sort=-",
        "Patient?_sort=",
        "Patient?birthdate=ge",
        "Patient?birthdate=ge99999",
        "Patient?birthdate=2024-02-30",
        "Patient?birthdate=-0001",
        "Patient?identifier=%7C",
        "Patient?identifier=a%5C",
        "Patient?name=%25%5F%5C",
        "Patient?name:contains=%25",
        "Patient?family:exact=%00",
        "Patient?_id=",
        "Patient?_id=%FF%FE",
        "Patient?%FF=1",
        "Patient?gender=female&gender=male&gender=",
        "Patient?_include=Patient",
        "Patient?_include=:::",
        "Patient?_revinclude=Observation:nope",
        "Observation?value-quantity=1e999",
        "Observation?value-quantity=NaN",
        "Observation?value-quantity=gt",
        "Observation?subject=",
        "Observation?subject=/",
        "Observation?subject=Patient/",
        "Observation?subject:patient=1",
        "Observation?subject:Patient.subject:Patient.identifier=1",
        "Observation?patient.nope=1",
        "Observation?code:text=x",
        "Observation?date=ge2024-01-01T25:00:00Z",
        "Observation?_lastUpdated=xx",
        "Patient/_history?_page=x",
        "Patient/_history?_since=yesterday",
        "Patient/x/_history/abc",
        "Patient/x/_history/-1",
        "Patient/x/_history/99999999999999999999",
        "Patient/x/$everything?_page=x",
        "Patient/x/$everything?_count=x",
        "Patient/..%2F..%2Fetc/passwd",
        "%2E%2E/metadata",
        "Patient?_format=application/fhir+xml",
    ] {
        let (s, _, body) = f.get_full(q, &[]).await;
        assert!(s < 500, "{q}: HTTP {s}: {body}");
        if s >= 400 && s != 404 || s == 404 && !body.is_empty() {
            assert!(body.contains("OperationOutcome"), "{q}: {s} {body}");
        }
    }
    // A huge query string: refused (4xx) or the connection closed by the HTTP layer, and the
    // gateway keeps answering.
    let long = format!("{base}/fhir/Patient?name={}", "a".repeat(100_000));
    if let Ok(r) = http.get(&long).send().await {
        assert!(r.status().as_u16() < 500, "long query: {}", r.status());
    }
    let (s, _) = f.get("metadata").await;
    assert_eq!(s, 200, "the gateway still answers");
    running.shutdown().await;
}
