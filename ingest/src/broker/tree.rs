//! Subscription index: a tree with one node per filter level, so that routing a message walks
//! the topic's levels instead of testing every filter.
//!
//! # Notes
//! - Wildcard levels are stored in their own fields of a node, beside the map of named
//!   children, so that matching a topic level costs one map lookup instead of three.
//! - A node contains the plain subscribers of its filter and the share groups of
//!   `$share/{group}/{filter}` subscriptions. Each group hands messages to its members in turn.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rumqttc::mqttbytes::QoS;

use super::topic::FilterSpec;

/// Identifier of a client, shared between its session and its subscriptions.
pub(crate) type ClientId = Arc<str>;

/// Every subscription of every session, indexed by filter level.
#[derive(Debug, Default)]
pub(crate) struct SubscriptionTree {
    root: Node,
}

#[derive(Debug, Default)]
struct Node {
    /// Children of named levels.
    children: HashMap<Box<str>, Node>,
    /// The child of a `+` level.
    single_wildcard: Option<Box<Node>>,
    /// The child of a `#` level.
    multi_wildcard: Option<Box<Node>>,
    subscribers: Subscribers,
}

/// The subscriptions to one filter.
#[derive(Debug, Default)]
pub(crate) struct Subscribers {
    /// Plain subscribers, with the QoS granted to each.
    pub(crate) clients: HashMap<ClientId, QoS>,
    /// Share groups by name.
    pub(crate) groups: BTreeMap<Box<str>, SharedGroup>,
}

/// Members of one share group for one filter. Each message goes to one member, in turn.
#[derive(Debug, Default)]
pub(crate) struct SharedGroup {
    members: Vec<(ClientId, QoS)>,
    /// Position of the member to try first for the next message. A `Cell`, so that routing
    /// advances it while it only reads the tree.
    next: Cell<usize>,
}

impl SharedGroup {
    /// Picks the member for the next message: the next connected member in turn, or, when no
    /// member is connected, the next member (a persistent session queues QoS 1 messages).
    pub(crate) fn choose(&self, is_connected: impl Fn(&str) -> bool) -> Option<(ClientId, QoS)> {
        let count = self.members.len();
        if count == 0 {
            return None;
        }
        let start = self.next.get() % count;
        let chosen = (0..count)
            .map(|offset| (start + offset) % count)
            .find(|&index| is_connected(&self.members[index].0))
            .unwrap_or(start);
        self.next.set(chosen + 1);
        Some(self.members[chosen].clone())
    }

    fn insert(&mut self, client_id: &ClientId, qos: QoS) {
        match self
            .members
            .iter_mut()
            .find(|(member, _)| member == client_id)
        {
            Some(member) => member.1 = qos,
            None => self.members.push((Arc::clone(client_id), qos)),
        }
    }
}

impl Subscribers {
    fn is_empty(&self) -> bool {
        self.clients.is_empty() && self.groups.is_empty()
    }
}

impl Node {
    fn is_empty(&self) -> bool {
        self.has_no_children() && self.subscribers.is_empty()
    }

    fn has_no_children(&self) -> bool {
        self.children.is_empty() && self.single_wildcard.is_none() && self.multi_wildcard.is_none()
    }

    /// Returns the child for filter level `level`, creating it when missing.
    fn child_or_insert(&mut self, level: &str) -> &mut Node {
        match level {
            "+" => self.single_wildcard.get_or_insert_with(Box::default),
            "#" => self.multi_wildcard.get_or_insert_with(Box::default),
            _ => self.children.entry(level.into()).or_default(),
        }
    }

    /// Returns the child for filter level `level`.
    fn child_mut(&mut self, level: &str) -> Option<&mut Node> {
        match level {
            "+" => self.single_wildcard.as_deref_mut(),
            "#" => self.multi_wildcard.as_deref_mut(),
            _ => self.children.get_mut(level),
        }
    }

    /// Removes the child for filter level `level`.
    fn remove_child(&mut self, level: &str) {
        match level {
            "+" => self.single_wildcard = None,
            "#" => self.multi_wildcard = None,
            _ => {
                self.children.remove(level);
            }
        }
    }
}

impl SubscriptionTree {
    /// Adds the subscription of `client_id` to `spec`, or updates its QoS.
    pub(crate) fn insert(&mut self, spec: FilterSpec<'_>, client_id: &ClientId, qos: QoS) {
        let mut node = &mut self.root;
        for level in spec.filter.split('/') {
            node = node.child_or_insert(level);
        }
        match spec.group {
            None => {
                node.subscribers.clients.insert(Arc::clone(client_id), qos);
            }
            Some(group) => node
                .subscribers
                .groups
                .entry(group.into())
                .or_default()
                .insert(client_id, qos),
        }
    }

    /// Removes the subscription of `client_id` to `spec`, and every node left empty.
    pub(crate) fn remove(&mut self, spec: FilterSpec<'_>, client_id: &str) {
        let levels: Vec<&str> = spec.filter.split('/').collect();
        remove_below(&mut self.root, &levels, spec.group, client_id);
    }

    /// Calls `visit` with the subscribers of every filter that matches `topic`, once per filter.
    pub(crate) fn for_each_match(&self, topic: &str, visit: &mut dyn FnMut(&Subscribers)) {
        // Wildcards in the first level do not match topics that start with `$`.
        let wildcards_match = !topic.starts_with('$');
        visit_matches(&self.root, Some(topic), wildcards_match, visit);
    }

    /// Returns whether no subscription is left.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.root.is_empty()
    }
}

/// Removes one subscription under `node`; returns whether `node` is empty afterwards.
fn remove_below(node: &mut Node, levels: &[&str], group: Option<&str>, client_id: &str) -> bool {
    match levels.split_first() {
        None => remove_subscriber(&mut node.subscribers, group, client_id),
        Some((level, rest)) => {
            let child_is_empty = node
                .child_mut(level)
                .is_some_and(|child| remove_below(child, rest, group, client_id));
            if child_is_empty {
                node.remove_child(level);
            }
        }
    }
    node.is_empty()
}

fn remove_subscriber(subscribers: &mut Subscribers, group: Option<&str>, client_id: &str) {
    let Some(group) = group else {
        subscribers.clients.remove(client_id);
        return;
    };
    if let Some(shared) = subscribers.groups.get_mut(group) {
        shared.members.retain(|(member, _)| &**member != client_id);
        if shared.members.is_empty() {
            subscribers.groups.remove(group);
        }
    }
}

/// Visits the subscribers of `node`'s descendants that match the topic levels in `levels`,
/// the rest of the topic after `node`'s level, or `None` when no level is left.
///
/// The levels are split off one at a time instead of collected into a `Vec` first, because
/// this runs for every routed message. `#` below `node` matches whatever is left, zero levels
/// included. `+` matches the next level. `wildcards_match` is false only for the first level
/// of a `$` topic.
fn visit_matches(
    node: &Node,
    levels: Option<&str>,
    wildcards_match: bool,
    visit: &mut dyn FnMut(&Subscribers),
) {
    if node.has_no_children() {
        if levels.is_none() {
            visit(&node.subscribers);
        }
        return;
    }
    if wildcards_match && let Some(rest_wildcard) = &node.multi_wildcard {
        visit(&rest_wildcard.subscribers);
    }
    let Some(levels) = levels else {
        visit(&node.subscribers);
        return;
    };
    // `a/b/` has three levels, the last one empty, so an empty rest is still a level.
    let (level, rest) = match levels.split_once('/') {
        Some((level, rest)) => (level, Some(rest)),
        None => (levels, None),
    };
    if wildcards_match && let Some(level_wildcard) = &node.single_wildcard {
        visit_matches(level_wildcard, rest, true, visit);
    }
    if let Some(child) = node.children.get(level) {
        visit_matches(child, rest, true, visit);
    }
}
