//! The action state machine.
//!
//! **Invariant:** this module is the only place that decides whether a state
//! transition is legal. Stores turn [`ActionState::sources`] into the guard of
//! their `UPDATE … WHERE state IN (…)` statements, so a transition that is not
//! listed here can never be written, whoever asks for it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The state of an action, spelled exactly as the Docker Cloud audit API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ActionState {
    /// Waiting for another In progress action on the same object.
    #[serde(rename = "Pending")]
    Pending,
    /// Dispatched to the workers, or being executed by one.
    #[serde(rename = "In progress")]
    InProgress,
    /// Cancellation was requested while it was running.
    #[serde(rename = "Canceling")]
    Canceling,
    /// Final: cancelled.
    #[serde(rename = "Canceled")]
    Canceled,
    /// Final: the operation succeeded.
    #[serde(rename = "Success")]
    Success,
    /// Final: the operation failed (see the action's logs).
    #[serde(rename = "Failed")]
    Failed,
}

/// A transition that [`ActionState::check_transition`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an action cannot go from {from} to {to}")]
pub struct IllegalTransition {
    /// The state the action was in.
    pub from: ActionState,
    /// The state that was asked for.
    pub to: ActionState,
}

impl ActionState {
    /// Every state, in lifecycle order.
    pub const ALL: [ActionState; 6] = [
        ActionState::Pending,
        ActionState::InProgress,
        ActionState::Canceling,
        ActionState::Canceled,
        ActionState::Success,
        ActionState::Failed,
    ];

    /// The wire spelling (`"In progress"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ActionState::Pending => "Pending",
            ActionState::InProgress => "In progress",
            ActionState::Canceling => "Canceling",
            ActionState::Canceled => "Canceled",
            ActionState::Success => "Success",
            ActionState::Failed => "Failed",
        }
    }

    /// Whether the action has ended: nothing moves it any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ActionState::Canceled | ActionState::Success | ActionState::Failed
        )
    }

    /// Whether the action counts as occupying its object, so that new actions on
    /// the same object wait as Pending.
    pub fn holds_object(self) -> bool {
        matches!(self, ActionState::InProgress | ActionState::Canceling)
    }

    /// The states from which `self` may be entered.
    ///
    /// ```text
    /// Pending ──► In progress ──► Success | Failed
    ///    │             │
    ///    │             ▼
    ///    │         Canceling ──► Canceled (also Success | Failed: the handler won the race)
    ///    └──────────────────────► Canceled
    /// ```
    pub fn sources(self) -> &'static [ActionState] {
        use ActionState::*;
        match self {
            Pending => &[],
            InProgress => &[Pending],
            Canceling => &[InProgress],
            Canceled => &[Pending, Canceling],
            // A cancel that races with completion ends in exactly one final
            // state: whichever write lands first wins, the other is refused.
            Success | Failed => &[InProgress, Canceling],
        }
    }

    /// `Ok` when `from → self` is a legal transition.
    pub fn check_transition(from: ActionState, to: ActionState) -> Result<(), IllegalTransition> {
        if to.sources().contains(&from) {
            Ok(())
        } else {
            Err(IllegalTransition { from, to })
        }
    }

    /// Whether a user may cancel an action in this state.
    pub fn can_be_canceled(self) -> bool {
        matches!(self, ActionState::Pending | ActionState::InProgress)
    }

    /// Whether a user may retry an action in this state.
    pub fn can_be_retried(self) -> bool {
        self.is_final()
    }
}

impl fmt::Display for ActionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a state name that is not one of the six.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown action state {0:?}: expected one of Pending, In progress, Canceling, Canceled, Success, Failed"
)]
pub struct UnknownState(pub String);

impl FromStr for ActionState {
    type Err = UnknownState;

    /// Parses the wire spelling; case-insensitive, and `In_progress`/`in-progress`
    /// are accepted too because shells and query strings mangle the space.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm: String = s
            .trim()
            .chars()
            .map(|c| {
                if c == '_' || c == '-' || c == '+' {
                    ' '
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        ActionState::ALL
            .into_iter()
            .find(|st| st.as_str().to_ascii_lowercase() == norm)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ActionState::*;

    #[test]
    fn final_states_have_no_way_out() {
        for from in [Canceled, Success, Failed] {
            for to in ActionState::ALL {
                assert!(ActionState::check_transition(from, to).is_err(), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn the_documented_transitions_are_legal() {
        for (from, to) in [
            (Pending, InProgress),
            (Pending, Canceled),
            (InProgress, Success),
            (InProgress, Failed),
            (InProgress, Canceling),
            (Canceling, Canceled),
            (Canceling, Success),
            (Canceling, Failed),
        ] {
            ActionState::check_transition(from, to).unwrap();
        }
    }

    #[test]
    fn illegal_transitions_are_refused() {
        for (from, to) in [
            (Pending, Success),
            (InProgress, Pending),
            (InProgress, Canceled),
            (Pending, Canceling),
        ] {
            assert_eq!(
                ActionState::check_transition(from, to),
                Err(IllegalTransition { from, to })
            );
        }
    }

    #[test]
    fn states_round_trip_through_their_wire_names() {
        for st in ActionState::ALL {
            assert_eq!(st.as_str().parse::<ActionState>().unwrap(), st);
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
        }
        assert_eq!("in_progress".parse::<ActionState>().unwrap(), InProgress);
        assert!("Running".parse::<ActionState>().is_err());
    }
}
