"""An app developer's session against the v2fhir facade with fhirpy (a third-party FHIR client),
ending with a device backend's writes.

Usage: python3 fhirpy_app.py BASE_URL   (e.g. http://127.0.0.1:8080/fhir)
Exits non-zero, with the reason, on the first failed expectation.
"""
import sys

from fhirpy import SyncFHIRClient

base = sys.argv[1]
client = SyncFHIRClient(base)


def check(cond, what):
    if not cond:
        print("FAILED:", what, file=sys.stderr)
        sys.exit(1)


# Counting and walking every page of a search.
n_obs = client.resources("Observation").count()
check(n_obs > 20, f"Observation count {n_obs}")
every = client.resources("Observation").limit(7).fetch_all()
ids = [o.id for o in every]
check(len(ids) == n_obs, f"fetch_all walked {len(ids)} of {n_obs}")
check(len(set(ids)) == len(ids), "fetch_all returned duplicates")

# A patient found by identifier, then read by id: same resource.
patients = client.resources("Patient").fetch_all()
check(len(patients) == client.resources("Patient").count(), "Patient count")
p = next(p for p in patients if any(i.get("system") for i in p.get("identifier", [])))
ident = next(i for i in p["identifier"] if i.get("system"))
found = client.resources("Patient").search(identifier=f"{ident['system']}|{ident['value']}").fetch_all()
check(p.id in [x.id for x in found], "search by identifier finds the patient")
read = client.reference("Patient", p.id).to_resource()
check(read.id == p.id and read["meta"]["versionId"] == p["meta"]["versionId"], "read equals search hit")
check(read.get("name") == p.get("name"), "read content equals search content")

# Date prefixes the fhirpy way (birthdate__ge=…).
born = client.resources("Patient").search(birthdate__ge="1960-01-01", birthdate__lt="1990").fetch_all()
for x in born:
    check("1960-01-01" <= x["birthDate"] < "1990", f"birthDate {x['birthDate']} outside the range")
check(len(born) > 0, "some patients born 1960-1989")

# Observations of the patient with most observations, with _include and _sort.
by_subject = {}
for o in every:
    ref = (o.get("subject") or {}).get("reference", "")
    if ref.startswith("Patient/"):
        by_subject[ref] = by_subject.get(ref, 0) + 1
subject = max(by_subject, key=by_subject.get)
pid = subject.split("/", 1)[1]
mine = client.resources("Observation").search(patient=pid).fetch_all()
check(len(mine) == by_subject[subject], f"patient={pid}: {len(mine)} vs {by_subject[subject]}")
raw = client.resources("Observation").search(patient=pid).include("Observation", "patient").fetch_raw()
included = [e["resource"]["id"] for e in raw["entry"] if e["search"]["mode"] == "include"]
check(included == [pid], f"_include gave {included}")
dated = client.resources("Observation").search(patient=pid).sort("date").fetch_all()
days = [o.get("effectiveDateTime", "")[:10] for o in dated if o.get("effectiveDateTime")]
check(days == sorted(days), "_sort=date order")

# $everything through the client's generic GET.
bundle = client.execute(f"Patient/{pid}/$everything", method="get")
types = {e["resource"]["resourceType"] for e in bundle["entry"]}
check("Patient" in types and "Observation" in types, f"$everything types {types}")

# Server errors come back as OperationOutcomes the client raises.
try:
    client.reference("Patient", "does-not-exist").to_resource()
    check(False, "reading a missing patient must fail")
except Exception as e:  # fhirpy raises ResourceNotFound
    check("not" in type(e).__name__.lower() or "404" in str(e) or "not known" in str(e), f"{type(e)}: {e}")

# A device backend writing through the same client: save() creates (POST), then updates (PUT).
reading = client.resource(
    "Observation",
    status="final",
    code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
    subject={"reference": subject},
    effectiveDateTime="2026-11-30T08:00:00Z",
    valueQuantity={"value": 61, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
)
reading.save()
check(bool(reading.id) and reading["meta"]["versionId"] == "1", f"created: {reading.get('id')} {reading.get('meta')}")
reading["status"] = "amended"
reading.save()
check(reading["meta"]["versionId"] == "2", f"updated: {reading.get('meta')}")
back = client.reference("Observation", reading.id).to_resource()
check(back["status"] == "amended", "read after the update")
after = client.resources("Observation").search(patient=pid).count()
check(after == by_subject[subject] + 1, f"patient={pid} after one reading: {after}")

print(f"ok: {n_obs} observations, {len(patients)} patients, patient {pid} with {len(mine)} observations")
