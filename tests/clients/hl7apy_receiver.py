"""A downstream MLLP receiver built on hl7apy's MLLPServer (a third-party HL7 v2 peer), used by
tests/forward.rs. It parses each message with hl7apy, appends it to OUT (messages separated by a
line of '---'), and answers AA with MSA-2 = MSH-10. Like many simple receivers it closes the
connection after every acknowledgment.

    python3 hl7apy_receiver.py PORT OUT
"""
import sys

from hl7apy.mllp import AbstractHandler, MLLPServer
from hl7apy.parser import parse_message

PORT = int(sys.argv[1])
OUT = sys.argv[2]


class Receive(AbstractHandler):
    def reply(self):
        msg = parse_message(self.incoming_message, find_groups=False)
        control = msg.msh.msh_10.value
        with open(OUT, "a", encoding="utf-8", newline="") as f:
            f.write(self.incoming_message + "\n---\n")
        ack = (
            "MSH|^~\\&|EHR|HOSP|V2FHIR|HOSP|20261130120000||ACK|A%s|P|2.5.1\r"
            "MSA|AA|%s\r" % (control, control)
        )
        return "\x0b" + ack + "\x1c\r"


TYPES = ["ADT^A08^ADT_A01", "ADT^A01^ADT_A01"]
server = MLLPServer("127.0.0.1", PORT, {t: (Receive,) for t in TYPES}, timeout=10)
print("listening", flush=True)
server.serve_forever()
