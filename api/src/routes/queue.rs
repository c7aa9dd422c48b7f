//! The action JSON with its queue place: `queue_position` and
//! `waiting_for` of the Pending actions among those answered, read in one
//! store query for all of them ([`ActionStore::queue_places`]), none when
//! no action is Pending.

use crate::auth::Caller;
use crate::error::ApiResult;
use crate::ApiState;
use stevedore_core::action::{Action, ActionJson};
use stevedore_core::state::ActionState;
use uuid::Uuid;

/// The wire JSON of `actions`, in order, each with its queue place.
///
/// The places are read after the actions: an action Pending when read may
/// have left its queue by then (promoted, canceled). Such an action is read
/// again and answered as it is now, so a Pending action never comes without
/// its place.
pub async fn wire(state: &ApiState, caller: &Caller, actions: &[Action]) -> ApiResult<Vec<ActionJson>> {
    let store = state.dispatcher.store();
    let mut actions = actions.to_vec();
    loop {
        let pending: Vec<Uuid> = actions
            .iter()
            .filter(|a| a.state == ActionState::Pending)
            .map(|a| a.uuid)
            .collect();
        let places = if pending.is_empty() {
            Default::default()
        } else {
            store.queue_places(caller.scope(), &pending).await?
        };
        let mut moved = false;
        for a in actions.iter_mut() {
            if a.state == ActionState::Pending && !places.contains_key(&a.uuid) {
                // It left the queue: its state is no longer Pending.
                if let Some(now) = store.get_action(caller.scope(), a.uuid).await? {
                    moved |= now.state != ActionState::Pending;
                    *a = now;
                }
            }
        }
        if !moved {
            return Ok(actions
                .iter()
                .map(|a| a.to_wire().with_queue(places.get(&a.uuid)))
                .collect());
        }
    }
}

/// [`wire`] of one action.
pub async fn wire_one(state: &ApiState, caller: &Caller, action: &Action) -> ApiResult<ActionJson> {
    let mut all = wire(state, caller, std::slice::from_ref(action)).await?;
    Ok(all.pop().unwrap_or_else(|| action.to_wire()))
}
