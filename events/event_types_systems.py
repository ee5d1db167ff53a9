"""Event types of the province's service systems: public services, citizen feedback,
emergency, security and payments (part of the catalogue, see events.event_types).
"""

from __future__ import annotations

from events.schema import DISTRICT_FIELD, EventType, choice, flag, integer, moment, number, text

SEVERITIES = ("low", "medium", "high")
EMERGENCY_SERVICES = ("police_113", "fire_114", "ambulance_115", "rescue_112")

_SERVICES = (
    EventType(
        type="vn.ioc.services.dossier",
        domain="services",
        name="dossier",
        description="A public-service dossier (hồ sơ thủ tục hành chính) is received or "
        "resolved. The decoder adds `timeliness` to resolved dossiers when absent "
        "(events.dossier).",
        key_field="dossier_id",
        source_prefix="/systems/dossiers",
        fields=(
            text("dossier_id", "dossier number"),
            DISTRICT_FIELD,
            choice("status", ("received", "resolved"), "transition"),
            choice("channel", ("online", "offline"), "submitted online or in person"),
            moment("due", "legal deadline of the result"),
            moment(
                "resolved_at", "when the result was issued; required if resolved", required=False
            ),
            choice(
                "timeliness",
                ("on_time", "overdue"),
                "derived from due and resolved_at for resolved dossiers",
                required=False,
            ),
            text("office_id", "receiving office (bộ phận một cửa)", required=False),
            text("procedure_code", "national procedure code", required=False),
        ),
        example={
            "dossier_id": "000.00.21.H23-260301-0042",
            "district": "GL",
            "status": "resolved",
            "channel": "online",
            "due": "2026-03-05T17:00:00+07:00",
            "resolved_at": "2026-03-04T09:30:00+07:00",
            "office_id": "GL-MC",
        },
    ),
    EventType(
        type="vn.ioc.services.portal",
        domain="services",
        name="portal",
        description="Load of the public-service portal over a reporting interval.",
        key_field="portal_id",
        source_prefix="/systems/portal",
        fields=(
            text("portal_id", "portal front-end id"),
            DISTRICT_FIELD,
            integer("requests", "requests", 0, 100_000_000, "requests in the interval"),
            integer("errors", "requests", 0, 100_000_000, "requests answered with an error"),
            number("p95_latency_ms", "ms", 0, 600_000, "95th percentile latency"),
            integer("interval_s", "s", 1, 3600, "length of the interval", required=False),
        ),
        example={
            "portal_id": "dichvucong-hd-1",
            "district": "HD",
            "requests": 5230,
            "errors": 12,
            "p95_latency_ms": 420.0,
            "interval_s": 60,
        },
    ),
)

_FEEDBACK = (
    EventType(
        type="vn.ioc.feedback.report",
        domain="feedback",
        name="report",
        description="A citizen report (phản ánh hiện trường) is opened, progresses or closes.",
        key_field="report_id",
        source_prefix="/systems/feedback",
        fields=(
            text("report_id", "report id"),
            DISTRICT_FIELD,
            choice(
                "category",
                (
                    "environment",
                    "traffic",
                    "urban_order",
                    "infrastructure",
                    "public_service",
                    "security",
                    "other",
                ),
                "topic of the report",
            ),
            choice("status", ("opened", "in_progress", "closed"), "transition"),
            choice("channel", ("app", "hotline", "web", "zalo"), "how it was sent"),
            integer("rating", "stars", 1, 5, "citizen's rating when closed", required=False),
            number("response_h", "h", 0, 10_000, "hours from opened to closed", required=False),
        ),
        example={
            "report_id": "PA-260301-0187",
            "district": "TK",
            "category": "environment",
            "status": "opened",
            "channel": "app",
        },
    ),
)

_EMERGENCY = (
    EventType(
        type="vn.ioc.emergency.call",
        domain="emergency",
        name="call",
        description="A call to an emergency number is answered.",
        key_field="call_id",
        source_prefix="/systems/emergency-calls",
        fields=(
            text("call_id", "call id"),
            DISTRICT_FIELD,
            choice("service", EMERGENCY_SERVICES, "number called"),
            choice("priority", ("low", "medium", "high", "critical"), "triage priority"),
            number("answer_s", "s", 0, 3600, "ringing time before answer", required=False),
        ),
        example={
            "call_id": "C115-260301-0311",
            "district": "NS",
            "service": "ambulance_115",
            "priority": "high",
            "answer_s": 6.5,
        },
    ),
    EventType(
        type="vn.ioc.emergency.dispatch",
        domain="emergency",
        name="dispatch",
        description="A unit is dispatched to an emergency incident.",
        key_field="incident_id",
        source_prefix="/systems/emergency-dispatch",
        fields=(
            text("incident_id", "incident id"),
            DISTRICT_FIELD,
            choice("service", EMERGENCY_SERVICES, "responding service"),
            number("dispatch_s", "s", 0, 86_400, "from call answered to unit dispatched"),
            number("arrival_s", "s", 0, 86_400, "from dispatch to arrival", required=False),
            text("unit_id", "dispatched unit", required=False),
        ),
        example={
            "incident_id": "E-260301-0311",
            "district": "NS",
            "service": "ambulance_115",
            "dispatch_s": 95.0,
            "unit_id": "115-NS-02",
        },
    ),
)

_SECURITY = (
    EventType(
        type="vn.ioc.security.incident",
        domain="security",
        name="incident",
        description="A camera analytics detection of a public-order incident.",
        key_field="camera_id",
        source_prefix="/sensors/camera",
        fields=(
            text("camera_id", "camera id"),
            DISTRICT_FIELD,
            choice(
                "kind",
                ("intrusion", "crowd", "fight", "abandoned_object", "fire_smoke", "wanted_vehicle"),
                "what was detected",
            ),
            choice("severity", SEVERITIES, "severity"),
            number("confidence", None, 0, 1, "detector confidence"),
            text("incident_id", "incident id", required=False),
        ),
        example={
            "camera_id": "HD-CAM-0412",
            "district": "HD",
            "kind": "crowd",
            "severity": "medium",
            "confidence": 0.87,
        },
    ),
    EventType(
        type="vn.ioc.security.cyber",
        domain="security",
        name="cyber",
        description="An attack detected on a provincial information system.",
        key_field="system_id",
        source_prefix="/systems/soc",
        fields=(
            text("system_id", "attacked system id"),
            DISTRICT_FIELD,
            choice("kind", ("ddos", "brute_force", "malware", "scan", "defacement"), "attack"),
            choice("severity", SEVERITIES, "severity"),
            number("requests_per_s", "req/s", 0, 100_000_000, "attack traffic", required=False),
            flag("blocked", "mitigated by the firewall", required=False),
        ),
        example={
            "system_id": "dichvucong-hd",
            "district": "HD",
            "kind": "ddos",
            "severity": "high",
            "requests_per_s": 18500.0,
            "blocked": True,
        },
    ),
)

_PAYMENTS = (
    EventType(
        type="vn.ioc.payments.transaction",
        domain="payments",
        name="transaction",
        description="A payment of a fee, tax or utility bill through a payment gateway.",
        key_field="gateway_id",
        source_prefix="/systems/payments",
        fields=(
            text("gateway_id", "payment gateway id"),
            DISTRICT_FIELD,
            text("transaction_id", "transaction id"),
            number("amount_vnd", "VND", 0, 100_000_000_000, "amount"),
            choice(
                "purpose",
                (
                    "tax",
                    "fee",
                    "utility",
                    "fine",
                    "transport",
                    "parking",
                    "healthcare",
                    "education",
                ),
                "what is paid",
            ),
            choice("method", ("qr", "card", "e_wallet", "bank_transfer"), "payment method"),
            choice("status", ("succeeded", "failed"), "outcome"),
            number("latency_ms", "ms", 0, 600_000, "gateway processing time", required=False),
        ),
        example={
            "gateway_id": "PAYGOV-HD",
            "district": "KM",
            "transaction_id": "TX-260301-889120",
            "amount_vnd": 150000.0,
            "purpose": "fee",
            "method": "qr",
            "status": "succeeded",
            "latency_ms": 830.0,
        },
    ),
)

SYSTEM_TYPES: tuple[EventType, ...] = (
    *_SERVICES,
    *_FEEDBACK,
    *_EMERGENCY,
    *_SECURITY,
    *_PAYMENTS,
)
