"""The Python peer of the benchmark: what a team would otherwise deploy.

A grpc.aio server on riskstream's contract (stubs generated from
proto/riskstream/v1/riskstream.proto) that does the same work per payment:
session comparison with the card-creation session, velocity windows per
card, email, IP and device, long per-card windows, delayed per-merchant
fraud rates from feedback, block lists fed by fraud reports, and the
logistic regression of a riskstream model file run by scikit-learn
(StandardScaler + LogisticRegression with the file's parameters), its
calibration and score map, and Radar-style levels and decisions.

Written the way a Python service usually is: dicts and deques of events,
one scikit-learn call per payment. Features follow src/features/ closely
but not bit for bit (the merchant windows use daily buckets).

Run: python server.py --listen 127.0.0.1:50053 --model models/default.json
(benches/compare.sh generates the stubs and runs it; see BENCHMARKS.md).
"""

import argparse
import asyncio
import bisect
import collections
import ipaddress
import json
import math
import re
import signal
import sys
from pathlib import Path

import grpc
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from riskstream.v1 import riskstream_pb2 as pb
from riskstream.v1 import riskstream_pb2_grpc as rpc

HOUR = 3_600_000
DAY = 24 * HOUR
UNKNOWN_CARD_AGE_MINUTES = 60.0 * 24 * 365


def zone_countries(repo: Path) -> dict:
    """The time zone → country table riskstream uses (src/fingerprint/geo.rs)."""
    text = (repo / "src/fingerprint/geo.rs").read_text()
    return dict(re.findall(r'\("([A-Za-z_/+-]+)", "([A-Z]{2})"\)', text))


def ua_family(ua: str) -> str:
    if not ua:
        return "unknown"
    for name, marks in (
        ("edge", ("Edg/", "Edge/", "EdgA/", "EdgiOS/")),
        ("opera", ("OPR/", "Opera")),
        ("samsung", ("SamsungBrowser",)),
        ("firefox", ("Firefox/", "FxiOS/")),
        ("chrome", ("Chrome/", "CriOS/", "Chromium/")),
        ("safari", ("Safari/",)),
        ("automation", ("curl/", "python", "Python", "Go-http-client", "Java/", "okhttp", "HeadlessChrome", "bot")),
    ):
        if any(m in ua for m in marks):
            return name
    return "other"


def ua_os(ua: str) -> str:
    if not ua:
        return "unknown"
    for name, marks in (
        ("windows", ("Windows",)),
        ("ios", ("iPhone", "iPad", "iPod")),
        ("android", ("Android",)),
        ("chromeos", ("CrOS",)),
        ("macos", ("Macintosh", "Mac OS X")),
        ("linux", ("Linux",)),
    ):
        if any(m in ua for m in marks):
            return name
    return "other"


def languages(header: str) -> set:
    out = set()
    for part in header.split(","):
        tag = part.split(";")[0].strip().lower()
        if tag and tag != "*":
            out.add(tag.split("-")[0])
    return out


def network(ip):
    if ip is None:
        return None
    prefix = 24 if ip.version == 4 else 48
    return ipaddress.ip_network(f"{ip}/{prefix}", strict=False)


def parse_ip(text: str):
    try:
        return ipaddress.ip_address(text) if text else None
    except ValueError:
        return None


class Facts:
    """What a creation session is compared on."""

    def __init__(self, s):
        self.device = s.device_id
        self.ip = parse_ip(s.ip)
        self.user_agent = s.user_agent
        self.family = ua_family(s.user_agent)
        self.os = ua_os(s.user_agent)
        self.screen = (s.screen_width, s.screen_height) if s.screen_width and s.screen_height else None
        self.timezone = s.timezone
        self.utc_offset = s.utc_offset_minutes if (s.timezone or s.utc_offset_minutes) else None
        self.accept_language = s.accept_language
        self.langs = languages(s.accept_language)
        self.session_id = s.session_id


class Velocity:
    """Events per key over the last hour and day, amounts, distinct cards."""

    def __init__(self):
        self.events = collections.defaultdict(collections.deque)

    def add(self, key, ts, amount=0, card=None):
        q = self.events[key]
        q.append((ts, amount, card))
        while q and q[0][0] <= ts - DAY:
            q.popleft()
        last_hour = sum(1 for e in q if e[0] > ts - HOUR)
        return last_hour, len(q), sum(e[1] for e in q), len({e[2] for e in q})


class Peer(rpc.RiskScorerServicer):
    def __init__(self, model_path: Path, repo: Path):
        m = json.loads(model_path.read_text())
        lr = m["estimator"]["logistic_regression"]
        self.names = m["features"]
        self.version = m["version"]
        self.scaler = StandardScaler()
        self.scaler.mean_ = np.array(lr["mean"])
        self.scaler.scale_ = np.array(lr["scale"])
        self.scaler.var_ = self.scaler.scale_ ** 2
        self.scaler.n_features_in_ = len(self.names)
        self.lr = LogisticRegression()
        self.lr.coef_ = np.array([lr["weights"]])
        self.lr.intercept_ = np.array([lr["intercept"]])
        self.lr.classes_ = np.array([0, 1])
        self.slope = m["calibration"]["slope"]
        self.offset = m["calibration"]["intercept"]
        knots = m["score_map"]
        self.knot_logits = [math.log(k["probability"] / (1 - k["probability"])) for k in knots]
        self.knot_scores = [k["score"] for k in knots]
        self.zones = zone_countries(repo)
        self.methods = {}
        self.payments = {}
        self.blocked_cards = set()
        self.blocked_emails = set()
        self.card = Velocity()
        self.email = Velocity()
        self.ip = Velocity()
        self.device = Velocity()
        self.card_long = collections.defaultdict(list)
        self.merchant_days = collections.defaultdict(lambda: collections.defaultdict(lambda: [0, 0]))

    # --- RPCs -----------------------------------------------------------

    async def RegisterPaymentMethod(self, request, context):
        pm = request.payment_method
        if not pm.id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "payment_method.id is required")
        self.methods[pm.id] = {
            "fingerprint": pm.card_fingerprint,
            "country": pm.card_country,
            "created_at_ms": pm.created_at_ms,
            "facts": Facts(pm.creation_session) if pm.HasField("creation_session") else None,
            "email": request.customer.email,
        }
        return pb.RegisterPaymentMethodResponse(payment_method_id=pm.id)

    async def Score(self, request, context):
        return self.score(request)

    async def ScoreStream(self, request_iterator, context):
        async for event in request_iterator:
            yield self.score(event)

    async def ReportFeedback(self, request, context):
        seen = self.payments.get(request.payment_id)
        lists = []
        if seen and request.kind in (pb.FEEDBACK_KIND_FRAUDULENT, pb.FEEDBACK_KIND_DISPUTE_FRAUD):
            merchant, day, card, email = seen
            self.merchant_days[merchant][day][1] += 1
            if card:
                self.blocked_cards.add(card)
                lists.append("block_card_fingerprint")
            if email:
                self.blocked_emails.add(email)
                lists.append("block_email")
        return pb.FeedbackResponse(lists_updated=lists)

    async def GetPaymentMethod(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not part of the benchmark")

    # --- scoring --------------------------------------------------------

    def score(self, ev):
        if not ev.payment_id:
            return pb.Outcome(error=pb.EventError(code="invalid_argument", field="payment_id", message="required"))
        method = self.methods.get(ev.payment_method.id)
        card = (method or {}).get("fingerprint") or ev.payment_method.card_fingerprint
        email = ev.customer.email or (method or {}).get("email", "")
        ts = ev.created_at_ms
        self.payments[ev.payment_id] = (ev.merchant_id, ts // DAY, card, email)
        x = self.features(ev, method, card, email, ts)
        z = self.lr.decision_function(self.scaler.transform(x.reshape(1, -1)))[0]
        z = self.slope * z + self.offset
        probability = 1.0 / (1.0 + math.exp(-z))
        score = int(np.interp(z, self.knot_logits, self.knot_scores))
        level = pb.RISK_LEVEL_HIGHEST if score >= 75 else pb.RISK_LEVEL_ELEVATED if score >= 65 else pb.RISK_LEVEL_NORMAL
        decision, reason = pb.DECISION_ALLOW, ""
        if card in self.blocked_cards or email in self.blocked_emails:
            decision, reason = pb.DECISION_BLOCK, "blocklist"
        elif level == pb.RISK_LEVEL_HIGHEST:
            decision, reason = pb.DECISION_BLOCK, "highest_risk_level"
        facts = (method or {}).get("facts")
        return pb.Outcome(
            payment_id=ev.payment_id,
            risk_score=score,
            risk_level=level,
            decision=decision,
            reason=reason,
            fraud_probability=probability,
            session_id=ev.session.session_id,
            creation_session_id=facts.session_id if facts else "",
            model_version=self.version,
        )

    def features(self, ev, method, card, email, ts):
        f = dict.fromkeys(self.names, 0.0)
        has_session = ev.HasField("session")
        s = ev.session
        facts = (method or {}).get("facts")
        f["session_missing"] = float(not has_session and not ev.off_session)
        f["off_session"] = float(ev.off_session)
        f["creation_session_missing"] = float(facts is None)
        if facts and has_session:
            if facts.device and s.device_id:
                f["device_mismatch"] = float(facts.device != s.device_id)
            ip = parse_ip(s.ip)
            if facts.ip is not None and ip is not None:
                f["ip_mismatch"] = float(facts.ip != ip)
                f["network_mismatch"] = float(network(facts.ip) != network(ip))
            if facts.user_agent and s.user_agent and facts.user_agent != s.user_agent:
                f["user_agent_mismatch"] = float(facts.family != ua_family(s.user_agent))
                f["os_mismatch"] = float(facts.os != ua_os(s.user_agent))
            if facts.screen and s.screen_width and s.screen_height:
                w, h = facts.screen
                f["screen_mismatch"] = float((w, h) not in ((s.screen_width, s.screen_height), (s.screen_height, s.screen_width)))
            if facts.timezone and s.timezone:
                f["timezone_mismatch"] = float(facts.timezone != s.timezone)
            if facts.utc_offset is not None and (s.timezone or s.utc_offset_minutes):
                f["utc_offset_diff_hours"] = min(abs(facts.utc_offset - s.utc_offset_minutes) / 60.0, 24.0)
            if facts.accept_language and s.accept_language and facts.accept_language != s.accept_language:
                a, b = facts.langs, languages(s.accept_language)
                f["language_mismatch"] = 1.0 - len(a & b) / len(a | b) if (a | b) else 0.0
        if has_session and method and method["country"]:
            zone_country = self.zones.get(s.timezone)
            if zone_country:
                f["card_country_mismatch"] = float(zone_country != method["country"])
        if method and method["created_at_ms"]:
            age = max(ts - method["created_at_ms"], 0) / 60_000.0
        else:
            age = UNKNOWN_CARD_AGE_MINUTES
        f["card_age_minutes"] = math.log1p(age)
        f["card_new_1h"] = float(age < 60.0)
        amount = ev.amount / 100.0
        f["amount"] = math.log1p(amount)
        f["setup_intent"] = float(ev.object_type == pb.OBJECT_TYPE_SETUP_INTENT)
        c1h, c24h, camount, _ = self.card.add(card, ts, ev.amount)
        f["card_count_1h"], f["card_count_24h"] = math.log1p(c1h), math.log1p(c24h)
        f["card_amount_24h"] = math.log1p(camount / 100.0)
        if email:
            e1h, e24h, _, _ = self.email.add(email, ts)
            f["email_count_1h"], f["email_count_24h"] = math.log1p(e1h), math.log1p(e24h)
        if has_session and s.ip:
            i1h, i24h, _, icards = self.ip.add(s.ip, ts, card=card)
            f["ip_count_1h"], f["ip_count_24h"], f["ip_cards_24h"] = math.log1p(i1h), math.log1p(i24h), math.log1p(icards)
        if has_session and s.device_id:
            d1h, d24h, _, dcards = self.device.add(s.device_id, ts, card=card)
            f["device_count_1h"], f["device_count_24h"], f["device_cards_24h"] = math.log1p(d1h), math.log1p(d24h), math.log1p(dcards)
        local = ts + (s.utc_offset_minutes * 60_000 if has_session else 0)
        f["night"] = float((local % DAY) // HOUR <= 6)
        f["weekend"] = float((local // DAY) % 7 in (2, 3))
        history = self.card_long[card]
        history.append((ts, ev.amount))
        cut = bisect.bisect_left(history, (ts - 30 * DAY + 1,))
        if cut:
            del history[:cut]
        for days in (1, 7, 30):
            recent = history[bisect.bisect_left(history, (ts - days * DAY + 1,)):]
            f[f"card_count_{days}d"] = math.log1p(len(recent))
            mean = sum(a for _, a in recent) / len(recent) / 100.0
            f[f"card_mean_amount_{days}d"] = math.log1p(mean)
        buckets = self.merchant_days[ev.merchant_id]
        end_day = (ts - 7 * DAY) // DAY
        for days in (1, 7, 30):
            count = frauds = 0
            for d in range(end_day - days, end_day):
                b = buckets.get(d)
                if b:
                    count += b[0]
                    frauds += b[1]
            f[f"merchant_count_{days}d_delayed"] = math.log1p(count)
            f[f"merchant_fraud_rate_{days}d_delayed"] = min(frauds, count) / count if count else 0.0
        buckets[ts // DAY][0] += 1
        f["amount_linear"] = min(amount, 1e6)
        f["amount_vs_card_mean_7d"] = f["amount"] - f["card_mean_amount_7d"]
        f["amount_vs_card_mean_30d"] = f["amount"] - f["card_mean_amount_30d"]
        return np.array([f[n] for n in self.names])


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--listen", default="127.0.0.1:50053")
    ap.add_argument("--model", default="models/default.json")
    ap.add_argument("--repo", default=".", help="riskstream checkout (for the zone table)")
    args = ap.parse_args()
    server = grpc.aio.server()
    rpc.add_RiskScorerServicer_to_server(Peer(Path(args.model), Path(args.repo)), server)
    port = server.add_insecure_port(args.listen)
    await server.start()
    print(f"grpc listening addr={args.listen.rsplit(':', 1)[0]}:{port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


if __name__ == "__main__":
    asyncio.run(main())
