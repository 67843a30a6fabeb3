package trafficgen

import (
	"fmt"
	"strings"
)

// PeerSeed is the fixed seed of the Peer workload, so every benchmark run compares the same stream.
const PeerSeed = 20_000

// Demo is the `make run` traffic: user u1 is in every group and has five person chats in which the peer
// writes most messages, so u1 ends with several person and group conversations with unread counts and
// recents. A sprinkle of the other variations (membership events, skipped types, no_persist) keeps the
// demo honest.
func Demo(users, groups, messages int, seed uint64) Config {
	return Config{
		Seed: seed, Messages: messages, Users: users,
		PersonPairs: users, PersonShare: 0.5, FocusUID: "u1", FocusPairs: 5, FocusInboundShare: 0.8,
		Groups: groups, GroupSizeMin: 3, GroupSizeMax: 8, InlineShare: 0.5, ChurnRate: 0.02,
		SystemRate: 0.02, SkippedRate: 0.02, NoPersistRate: 0.02, SyncOnceRate: 0.01, RedDotOffRate: 0.05,
	}
}

// Differential is the tests' stream: every variation of the contract at once (person and group-like
// channels of several types, the same id under two types, inline subscribers and membership events with
// churn, partial subscriber lists, system messages, red-dot and header variations, no "type" field,
// no_persist, sync_once, skipped types) plus duplicates and local reordering. Add Chaos.MalformedRate for
// poison tests.
func Differential(messages int, seed uint64) Config {
	return Config{
		Seed: seed, Messages: messages, Users: 40,
		PersonPairs: 60, PersonShare: 0.45, FocusUID: "u1", FocusPairs: 4, FocusInboundShare: 0.6,
		Groups: 12, GroupSizeMin: 3, GroupSizeMax: 10, InlineShare: 0.5, ChurnRate: 0.1, OtherTypes: true,
		PartialSubscribersRate: 0.05, SystemRate: 0.03, SkippedRate: 0.03, NoPersistRate: 0.03,
		SyncOnceRate: 0.02, RedDotOffRate: 0.1, NoHeaderRate: 0.03, OmitTypeRate: 0.1,
		Chaos: Chaos{DuplicateRate: 0.05, ReorderRate: 0.1, ReorderDistance: 32},
	}
}

// W1 is person chats among 10,000 users: 20,000 pairs, every message 1:1.
func W1(messages int, seed uint64) Config {
	return Config{Seed: seed, Messages: messages, Users: 10_000, PersonPairs: 20_000, PersonShare: 1}
}

// W2 is 1,000 groups of 50 members drawn from 10,000 users; every message lists its 50 subscribers inline.
func W2(messages int, seed uint64) Config {
	return Config{Seed: seed, Messages: messages, Users: 10_000, Groups: 1_000, GroupSizeMin: 50, GroupSizeMax: 50, InlineShare: 1}
}

// W3 is one group of 500 members (u1..u500, from one channel.subscribers.added event) receiving messages
// in bursts of 50 from one sender: the fan-out worst case.
func W3(messages int, seed uint64) Config {
	return Config{Seed: seed, Messages: messages, Users: 500, Groups: 1, GroupSizeMin: 500, GroupSizeMax: 500, BurstSize: 50}
}

// Peer is the workload the service is compared with WuKongIM on: 2,000 users, 200 groups of 20 random
// members (from membership events), 1,000 person pairs, 30,000 messages half to groups and half to
// person chats, random senders, red_dot 1, fixed seed: about three conversations per user.
func Peer() Config {
	return Config{
		Seed: PeerSeed, Messages: 30_000, Users: 2_000,
		PersonPairs: 1_000, PersonShare: 0.5, Groups: 200, GroupSizeMin: 20, GroupSizeMax: 20,
	}
}

// Workloads lists the names Named accepts.
var Workloads = []string{"demo", "w1", "w2", "w3", "peer"}

// Named returns a named workload with its default size: demo 400 messages among 50 users and 8 groups,
// w1 100,000, w2 20,000, w3 5,000, peer 30,000 messages. It fails for an unknown name.
func Named(name string, seed uint64) (Config, error) {
	switch strings.ToLower(name) {
	case "demo":
		return Demo(50, 8, 400, seed), nil
	case "w1":
		return W1(100_000, seed), nil
	case "w2":
		return W2(20_000, seed), nil
	case "w3":
		return W3(5_000, seed), nil
	case "peer":
		return Peer(), nil
	}
	return Config{}, fmt.Errorf("unknown workload %q (want one of %s)", name, strings.Join(Workloads, ", "))
}
