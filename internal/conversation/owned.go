package conversation

// OwnedBy returns r restricted to the conversation rows of the users owns accepts: the deliveries, the
// following decisions and the row keys of other users are dropped. Everything keyed by channel (the
// messages, the channels' states, late messages and the membership change) stays. ApplyRouting
// computes each row from that row's deliveries and following alone, so the rows it returns for the
// users kept are the ones it returns for them from r: a shard of a read model sharded by user that
// keeps whole channels writes exactly its users' part of what one node writes.
func (r Routing) OwnedBy(owns func(uid string) bool) Routing {
	var ds []Delivery
	for _, d := range r.Deliveries {
		if owns(d.Key.UID) {
			ds = append(ds, d)
		}
	}
	follow := make(map[ConvKey]bool, len(r.Follow))
	for k, v := range r.Follow {
		if owns(k.UID) {
			follow[k] = v
		}
	}
	var keys []ConvKey
	for _, k := range r.RowKeys {
		if owns(k.UID) {
			keys = append(keys, k)
		}
	}
	r.Deliveries, r.Follow, r.RowKeys = ds, follow, keys
	return r
}
