package main

import (
	"context"
	"fmt"
	"text/tabwriter"
)

// lag prints the group's committed offset, the end and the lag of every partition of the topic.
func (e *cmdEnv) lag(ctx context.Context, args []string) error {
	fs := e.flags("lag", "lag [-group G] [-topic T]")
	group := fs.String("group", e.cfg.KafkaGroupID, "consumer group")
	topic := fs.String("topic", e.cfg.KafkaTopic, "topic")
	if err := parse(fs, args); err != nil {
		return err
	}
	c, err := e.cluster()
	if err != nil {
		return err
	}
	defer c.Close()
	parts, committed, end, lag, err := c.groupLag(ctx, *group, *topic)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(e.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PARTITION\tCOMMITTED\tEND\tLAG")
	var total int64
	for _, p := range parts {
		c := fmt.Sprint(committed[p])
		if committed[p] < 0 {
			c = "-"
		}
		fmt.Fprintf(w, "%d\t%s\t%d\t%d\n", p, c, end[p], lag[p])
		total += lag[p]
	}
	fmt.Fprintf(w, "total\t\t\t%d\n", total)
	return w.Flush()
}
