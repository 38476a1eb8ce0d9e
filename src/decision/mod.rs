//! Decisions: risk levels from thresholds, the action each level takes, list
//! hits, reasons, rule ids and seller messages modelled on Radar's, and the
//! propensity of each decision under the holdout.
//!
//! - [`holdout`]: the keyed-hash holdout draw.

pub mod holdout;

use crate::state::List;

/// Risk level of a payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RiskLevel {
    /// Score below the elevated threshold.
    Normal,
    /// Score at or above the elevated threshold.
    Elevated,
    /// Score at or above the highest threshold.
    Highest,
    /// Not assessed: other payment method types, opted out, recurring after the first payment.
    NotAssessed,
    /// Scoring failed; the payment fails open.
    Unknown,
}

impl RiskLevel {
    /// Every level, in a fixed order.
    pub const ALL: [RiskLevel; 5] = [
        RiskLevel::Normal,
        RiskLevel::Elevated,
        RiskLevel::Highest,
        RiskLevel::NotAssessed,
        RiskLevel::Unknown,
    ];

    /// Lower-case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Normal => "normal",
            RiskLevel::Elevated => "elevated",
            RiskLevel::Highest => "highest",
            RiskLevel::NotAssessed => "not_assessed",
            RiskLevel::Unknown => "unknown",
        }
    }
}

/// What the backend should do with the payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send it to the network.
    Allow,
    /// Send it, and queue it for manual review.
    Review,
    /// Do not send it.
    Block,
    /// Ask the card network for 3D Secure authentication first.
    Request3ds,
}

impl Action {
    /// Every action, in a fixed order.
    pub const ALL: [Action; 4] = [
        Action::Allow,
        Action::Review,
        Action::Block,
        Action::Request3ds,
    ];

    /// Lower-case name for logs, flags and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Review => "review",
            Action::Block => "block",
            Action::Request3ds => "request_3ds",
        }
    }

    /// Parses a flag value (`allow`, `review`, `block`, `request-3ds`).
    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "allow" => Some(Action::Allow),
            "review" => Some(Action::Review),
            "block" => Some(Action::Block),
            "request-3ds" | "request_3ds" => Some(Action::Request3ds),
            _ => None,
        }
    }
}

/// What decided a payment: the model's policy (its score and the
/// thresholds, through the holdout), a list, or nothing (not assessed, or
/// scoring failed and the payment failed open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// The level of the reported score decided.
    Model,
    /// An allow or block list decided.
    List,
    /// The payment was not assessed (its level is `not_assessed`).
    NotAssessed,
    /// Scoring failed and the payment was allowed (its level is `unknown`).
    ScoringFailed,
}

impl DecidedBy {
    /// Lower-case name, as the decision log writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            DecidedBy::Model => "model",
            DecidedBy::List => "list",
            DecidedBy::NotAssessed => "not_assessed",
            DecidedBy::ScoringFailed => "scoring_failed",
        }
    }
}

/// The decision on one payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// What to do.
    pub action: Action,
    /// Why, as the contract names it (empty for a normal allow).
    pub reason: &'static str,
    /// The rule that decided (empty if none).
    pub rule: &'static str,
    /// A message for the business's dashboard.
    pub seller_message: &'static str,
}

/// What about a payment, beyond its score, shapes the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// A SetupIntent: never reviewed.
    pub setup_intent: bool,
    /// A card: the only kind 3D Secure applies to.
    pub card: bool,
}

/// The configurable decision policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Scores at or above it are elevated (default 65).
    pub elevated_threshold: u32,
    /// Scores at or above it are highest risk (default 75).
    pub highest_threshold: u32,
    /// What an elevated score does (default allow; `review` is the elevated-review setting).
    pub elevated_action: Action,
    /// What a highest score does (default block).
    pub highest_action: Action,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            elevated_threshold: 65,
            highest_threshold: 75,
            elevated_action: Action::Allow,
            highest_action: Action::Block,
        }
    }
}

const MSG_ALLOWED: &str = "Payment complete.";
const MSG_NOT_ASSESSED: &str = "Payment complete. Its risk was not assessed.";
const MSG_UNKNOWN: &str = "Payment complete. Its risk could not be assessed, so it was allowed.";

fn level_verdict(level: RiskLevel, action: Action) -> Verdict {
    let (reason, rule, msg) = match (level, action) {
        (RiskLevel::Highest, Action::Block) => (
            "highest_risk_level",
            "block_if_highest_risk",
            "riskstream blocked this payment as too risky.",
        ),
        (RiskLevel::Highest, Action::Review) => (
            "highest_risk_level",
            "review_if_highest_risk",
            "riskstream placed this payment in review: its risk level is highest.",
        ),
        (RiskLevel::Highest, Action::Request3ds) => (
            "highest_risk_level",
            "request_3ds_if_highest_risk",
            "riskstream requested 3D Secure authentication: this payment's risk level is highest.",
        ),
        (RiskLevel::Highest, Action::Allow) => ("highest_risk_level", "", MSG_ALLOWED),
        (RiskLevel::Elevated, Action::Block) => (
            "elevated_risk_level",
            "block_if_elevated_risk",
            "riskstream blocked this payment: its risk level is elevated.",
        ),
        (RiskLevel::Elevated, Action::Review) => (
            "elevated_risk_level",
            "review_if_elevated_risk",
            "riskstream placed this payment in review: its risk level is elevated.",
        ),
        (RiskLevel::Elevated, Action::Request3ds) => (
            "elevated_risk_level",
            "request_3ds_if_elevated_risk",
            "riskstream requested 3D Secure authentication: this payment's risk level is elevated.",
        ),
        (RiskLevel::Elevated, Action::Allow) => ("elevated_risk_level", "", MSG_ALLOWED),
        (RiskLevel::Normal, _) => ("", "", MSG_ALLOWED),
        (RiskLevel::NotAssessed, _) => ("not_assessed_risk_level", "", MSG_NOT_ASSESSED),
        (RiskLevel::Unknown, _) => ("unknown_risk_level", "", MSG_UNKNOWN),
    };
    Verdict {
        action,
        reason,
        rule,
        seller_message: msg,
    }
}

impl Policy {
    /// The level of a score.
    pub fn level(&self, score: u32) -> RiskLevel {
        if score >= self.highest_threshold {
            RiskLevel::Highest
        } else if score >= self.elevated_threshold {
            RiskLevel::Elevated
        } else {
            RiskLevel::Normal
        }
    }

    /// The lowest score whose decision is `Block` (`None` when no level
    /// blocks): the threshold the holdout lets payments through.
    pub fn block_threshold(&self) -> Option<u32> {
        if self.elevated_action == Action::Block {
            Some(self.elevated_threshold)
        } else if self.highest_action == Action::Block {
            Some(self.highest_threshold)
        } else {
            None
        }
    }

    /// The action configured for `level`, adjusted for the payment: a
    /// SetupIntent is never reviewed, 3D Secure applies to cards only.
    fn action(&self, level: RiskLevel, ctx: Context) -> Action {
        let configured = match level {
            RiskLevel::Highest => self.highest_action,
            RiskLevel::Elevated => self.elevated_action,
            _ => Action::Allow,
        };
        match configured {
            Action::Review if ctx.setup_intent => Action::Allow,
            Action::Request3ds if !ctx.card => Action::Allow,
            a => a,
        }
    }

    /// The decision for a payment at `level` that no list matched.
    pub fn decide(&self, level: RiskLevel, ctx: Context) -> Verdict {
        level_verdict(level, self.action(level, ctx))
    }

    /// The decision for a payment that matched `list`.
    pub fn list_verdict(list: List) -> Verdict {
        let (action, reason, msg) = match list {
            List::BlockCardFingerprint => (
                Action::Block,
                "blocklist",
                "riskstream blocked this payment: its card fingerprint is on the block list.",
            ),
            List::BlockEmail => (
                Action::Block,
                "blocklist",
                "riskstream blocked this payment: its email is on the block list.",
            ),
            List::BlockIp => (
                Action::Block,
                "blocklist",
                "riskstream blocked this payment: its IP address is on the block list.",
            ),
            List::BlockDeviceId => (
                Action::Block,
                "blocklist",
                "riskstream blocked this payment: its device is on the block list.",
            ),
            List::BlockCustomerId => (
                Action::Block,
                "blocklist",
                "riskstream blocked this payment: its customer is on the block list.",
            ),
            List::AllowCardFingerprint
            | List::AllowEmail
            | List::AllowIp
            | List::AllowDeviceId
            | List::AllowCustomerId => (
                Action::Allow,
                "allowlist",
                "Payment complete. It matched an allow list entry.",
            ),
        };
        Verdict {
            action,
            reason,
            rule: list.name(),
            seller_message: msg,
        }
    }

    /// Probability that a payment whose true score is `true_score` gets
    /// `action`, when a share `rate` of payments has its score replaced by a
    /// uniform draw over 0–99 and the decision follows the reported score.
    pub fn propensity(&self, true_score: u32, action: Action, rate: f64, ctx: Context) -> f64 {
        let own = if self.action(self.level(true_score), ctx) == action {
            1.0
        } else {
            0.0
        };
        if rate <= 0.0 {
            return own;
        }
        let share = |lo: u32, hi: u32| f64::from(hi.saturating_sub(lo)) / 100.0;
        let e = self.elevated_threshold.min(100);
        let h = self.highest_threshold.min(100).max(e);
        let mut uniform = 0.0;
        for (level, lo, hi) in [
            (RiskLevel::Normal, 0, e),
            (RiskLevel::Elevated, e, h),
            (RiskLevel::Highest, h, 100),
        ] {
            if self.action(level, ctx) == action {
                uniform += share(lo, hi);
            }
        }
        (1.0 - rate) * own + rate * uniform
    }

    /// Probability that a payment whose true score is `true_score` is let
    /// through (its decision is anything but `Block`) under the holdout of
    /// share `rate`: the propensity that weights its label when recall and
    /// false-positive rates are estimated.
    pub fn allowed_propensity(&self, true_score: u32, rate: f64, ctx: Context) -> f64 {
        let allowed: f64 = Action::ALL
            .iter()
            .filter(|a| **a != Action::Block)
            .map(|a| self.propensity(true_score, *a, rate, ctx))
            .sum();
        allowed.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: Context = Context {
        setup_intent: false,
        card: true,
    };

    #[test]
    fn default_levels_and_actions() {
        let p = Policy::default();
        assert_eq!(p.level(64), RiskLevel::Normal);
        assert_eq!(p.level(65), RiskLevel::Elevated);
        assert_eq!(p.level(75), RiskLevel::Highest);
        let v = p.decide(RiskLevel::Highest, CARD);
        assert_eq!((v.action, v.reason), (Action::Block, "highest_risk_level"));
        let v = p.decide(RiskLevel::Elevated, CARD);
        assert_eq!((v.action, v.reason), (Action::Allow, "elevated_risk_level"));
        let v = p.decide(RiskLevel::Normal, CARD);
        assert_eq!((v.action, v.reason), (Action::Allow, ""));
    }

    #[test]
    fn review_never_applies_to_a_setup_intent() {
        let p = Policy {
            elevated_action: Action::Review,
            ..Policy::default()
        };
        assert_eq!(p.decide(RiskLevel::Elevated, CARD).action, Action::Review);
        let setup = Context {
            setup_intent: true,
            card: true,
        };
        let v = p.decide(RiskLevel::Elevated, setup);
        assert_eq!((v.action, v.reason), (Action::Allow, "elevated_risk_level"));
    }

    #[test]
    fn propensities_sum_to_one() {
        let p = Policy {
            elevated_action: Action::Review,
            ..Policy::default()
        };
        for score in [0, 64, 65, 74, 75, 99] {
            let total: f64 = Action::ALL
                .iter()
                .map(|a| p.propensity(score, *a, 0.01, CARD))
                .sum();
            assert!((total - 1.0).abs() < 1e-12);
        }
        assert!((p.propensity(10, Action::Block, 1.0, CARD) - 0.25).abs() < 1e-12);
        assert!((p.propensity(80, Action::Block, 0.01, CARD) - (0.99 + 0.0025)).abs() < 1e-12);
        assert_eq!(p.propensity(10, Action::Block, 0.0, CARD), 0.0);
    }

    #[test]
    fn allowed_propensity_is_the_chance_of_anything_but_a_block() {
        let review = Policy {
            elevated_action: Action::Review,
            ..Policy::default()
        };
        for p in [Policy::default(), review] {
            // Below the block threshold: kept unless the holdout draws 75–99.
            assert!((p.allowed_propensity(70, 0.05, CARD) - (0.95 + 0.05 * 0.75)).abs() < 1e-12);
            // At or above it: let through only by a holdout draw below 75.
            assert!((p.allowed_propensity(75, 0.05, CARD) - 0.05 * 0.75).abs() < 1e-12);
            assert_eq!(p.allowed_propensity(10, 0.0, CARD), 1.0);
            assert_eq!(p.allowed_propensity(99, 0.0, CARD), 0.0);
        }
        // A review counts as let through: P(allow) alone would be lower.
        assert!(review.propensity(70, Action::Allow, 0.05, CARD) < 0.9);
    }

    #[test]
    fn the_allowed_propensity_is_the_share_let_through_by_the_draw() {
        use super::holdout::{Holdout, HoldoutPolicy};
        let p = Policy::default();
        let flat = Holdout::new(0.3, b"k");
        let score = Holdout::new(0.3, b"k").with_policy(HoldoutPolicy::Score { min_rate: 0.02 });
        let n = 40_000;
        for h in [flat, score] {
            for s in [10, 70, 75, 82, 88, 99] {
                // As the engine decides: the rate of the true score, the
                // draw, the level of the reported score.
                let rate = h.rate_at(s, p.block_threshold());
                let allowed = (0..n)
                    .filter(|i| {
                        let reported = h.draw(&format!("pay_{s}_{i}"), rate).unwrap_or(s);
                        p.decide(p.level(reported), CARD).action != Action::Block
                    })
                    .count() as f64
                    / n as f64;
                let expected = p.allowed_propensity(s, rate, CARD);
                let sd = (expected * (1.0 - expected) / n as f64).sqrt();
                assert!(
                    (allowed - expected).abs() <= 4.5 * sd + 1e-9,
                    "{:?} score {s}: {allowed} let through, propensity {expected}",
                    h.policy()
                );
            }
        }
    }

    #[test]
    fn the_block_threshold_is_the_lowest_level_that_blocks() {
        let p = Policy::default();
        assert_eq!(p.block_threshold(), Some(75));
        let both = Policy {
            elevated_action: Action::Block,
            ..p
        };
        assert_eq!(both.block_threshold(), Some(65));
        let none = Policy {
            highest_action: Action::Review,
            ..p
        };
        assert_eq!(none.block_threshold(), None);
    }
}
