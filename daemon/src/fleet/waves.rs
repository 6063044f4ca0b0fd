//! Wave planning: a rollout goes to the canary groups first and to the rest only once every
//! canary confirmed, so a bad config stops at a few boxes.

use super::inventory::BoxEntry;

/// Why no rollout can be planned.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// No box of the inventory is in a canary group: pushing to everyone at once is refused.
    #[error(
        "no box with a config to push is in the canary group(s) {0}: name a group with --canary"
    )]
    NoCanary(String),
    /// No box has a config to push.
    #[error("no box of the inventory has a config in the push folder")]
    NothingToPush,
}

/// The boxes of one wave, in inventory order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wave {
    /// `canary` or `rest`.
    pub label: &'static str,
    /// The boxes.
    pub boxes: Vec<BoxEntry>,
}

/// The waves of a rollout, and the boxes left out because the folder has no config for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Canary first, then the rest (absent when empty).
    pub waves: Vec<Wave>,
    /// Boxes with no config to push: reported, untouched.
    pub without_config: Vec<BoxEntry>,
}

/// Plans the waves over `boxes`: those whose group is in `canary_groups` first, then every
/// other box; `has_config` says whether a box has a config to push.
pub fn plan(
    boxes: &[BoxEntry],
    canary_groups: &[String],
    has_config: impl Fn(&BoxEntry) -> bool,
) -> Result<Plan, PlanError> {
    let (with, without_config): (Vec<BoxEntry>, Vec<BoxEntry>) =
        boxes.iter().cloned().partition(|b| has_config(b));
    if with.is_empty() {
        return Err(PlanError::NothingToPush);
    }
    let (canary, rest): (Vec<BoxEntry>, Vec<BoxEntry>) = with
        .into_iter()
        .partition(|b| canary_groups.contains(&b.group));
    if canary.is_empty() {
        return Err(PlanError::NoCanary(canary_groups.join(", ")));
    }
    let mut waves = vec![Wave {
        label: "canary",
        boxes: canary,
    }];
    if !rest.is_empty() {
        waves.push(Wave {
            label: "rest",
            boxes: rest,
        });
    }
    Ok(Plan {
        waves,
        without_config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, group: &str) -> BoxEntry {
        BoxEntry {
            name: name.to_string(),
            management: "198.18.0.2:7443".parse().unwrap(),
            server_name: format!("{name}.test"),
            group: group.to_string(),
        }
    }

    fn names(wave: &Wave) -> Vec<&str> {
        wave.boxes.iter().map(|b| b.name.as_str()).collect()
    }

    #[test]
    fn ops5_waves_put_the_canary_group_first_then_the_rest_in_inventory_order() {
        let boxes = [
            entry("c1", "clinics"),
            entry("h", "canary"),
            entry("c2", "clinics"),
            entry("h2", "pilot"),
        ];
        let plan = plan(&boxes, &["canary".into(), "pilot".into()], |_| true).unwrap();
        assert_eq!(plan.waves.len(), 2);
        assert_eq!(plan.waves[0].label, "canary");
        assert_eq!(names(&plan.waves[0]), ["h", "h2"]);
        assert_eq!(names(&plan.waves[1]), ["c1", "c2"]);
        assert!(plan.without_config.is_empty());
    }

    #[test]
    fn ops5_waves_leave_out_boxes_without_a_config_and_refuse_a_rollout_without_canary() {
        let boxes = [entry("h", "canary"), entry("c", "clinics")];
        let plan = plan(&boxes, &["canary".into()], |b| b.name == "h").unwrap();
        assert_eq!(plan.waves.len(), 1);
        assert_eq!(names(&plan.waves[0]), ["h"]);
        assert_eq!(plan.without_config, [entry("c", "clinics")]);

        assert_eq!(
            super::plan(&boxes, &["canary".into()], |b| b.name == "c"),
            Err(PlanError::NoCanary("canary".into()))
        );
        assert_eq!(
            super::plan(&boxes, &["canary".into()], |_| false),
            Err(PlanError::NothingToPush)
        );
    }
}
