-- Second database on the compose PostgreSQL server, for the HAPI FHIR upstream.
CREATE DATABASE hapi OWNER v2fhir;
