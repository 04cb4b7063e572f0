"""A downstream MLLP receiver built on hl7apy's MLLPServer (a third-party HL7 v2 peer), used by
tests/forward.rs. It parses each message with hl7apy, appends it to OUT (messages separated by a
line of '---'), and answers AA with MSA-2 = MSH-10. An ORU^R01 or VXU^V04 (built by the gateway
from FHIR writes) is parsed into its groups and validated against HL7 v2.5.1 with hl7apy's strict
validation first: AE with the reason if it fails. Like many simple receivers it closes the
connection after every acknowledgment.

    python3 hl7apy_receiver.py PORT OUT
"""
import sys

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.mllp import AbstractHandler, MLLPServer
from hl7apy.parser import parse_message

PORT = int(sys.argv[1])
OUT = sys.argv[2]


def ack(control, code, text=""):
    text = text.replace("|", " ").replace("^", " ").replace("~", " ").replace("\\", " ").replace("&", " ")
    msa = "MSA|%s|%s|%s" % (code, control, text) if text else "MSA|%s|%s" % (code, control)
    return "\x0bMSH|^~\\&|EHR|HOSP|V2FHIR|HOSP|20261130120000||ACK|A%s|P|2.5.1\r%s\r\x1c\r" % (control, msa)


class Receive(AbstractHandler):
    def reply(self):
        msg = parse_message(self.incoming_message, find_groups=False)
        control = msg.msh.msh_10.value
        with open(OUT, "a", encoding="utf-8", newline="") as f:
            f.write(self.incoming_message + "\n---\n")
        return ack(control, "AA")


class ReceiveResults(AbstractHandler):
    def reply(self):
        loose = parse_message(self.incoming_message, find_groups=False)
        control = loose.msh.msh_10.value
        try:
            strict = parse_message(
                self.incoming_message,
                find_groups=True,
                validation_level=VALIDATION_LEVEL.STRICT,
            )
            strict.validate()
        except Exception as e:  # the reason goes back to the sender
            return ack(control, "AE", "not a valid %s: %s" % (loose.msh.msh_9.value, e))
        with open(OUT, "a", encoding="utf-8", newline="") as f:
            f.write(self.incoming_message + "\n---\n")
        return ack(control, "AA")


HANDLERS = {t: (Receive,) for t in ["ADT^A08^ADT_A01", "ADT^A01^ADT_A01"]}
HANDLERS["ORU^R01^ORU_R01"] = (ReceiveResults,)
HANDLERS["VXU^V04^VXU_V04"] = (ReceiveResults,)
server = MLLPServer("127.0.0.1", PORT, HANDLERS, timeout=10)
print("listening", flush=True)
server.serve_forever()
