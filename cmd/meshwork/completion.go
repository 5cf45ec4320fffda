package main

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshwork/meshwork/api"
	"github.com/meshwork/meshwork/catalog"
	"github.com/meshwork/meshwork/policy"
	"github.com/meshwork/meshwork/raftstore"
)

// completionTimeout bounds each request a completion makes: a shell that
// waits longer than that for a Tab is broken, whatever --timeout says.
const completionTimeout = 2 * time.Second

// completions are the dynamic completions of the commands' arguments, by
// command path below the root. They ask the agent the command line names
// (--http-addr, --token...), and offer nothing when it does not answer.
var completions = map[string]cobra.CompletionFunc{
	"force-leave":               completeNodes(func(m api.Member) bool { return m.Status == string(catalog.StatusFailed) }),
	"operator raft remove-peer": completeNodes(func(m api.Member) bool { return m.Server }),
	"catalog service":           completeServiceNames,
	"services deregister":       completeLocalServiceIDs,
	"policy get":                completePolicyKindAndName,
	"policy delete":             completePolicyKindAndName,
	"policy list":               completePolicyKindAndName,
	"acl policy read":           completeACLPolicyNames,
	"acl policy update":         completeACLPolicyNames,
	"acl policy delete":         completeACLPolicyNames,
}

// addCompletions sets the completions of the tree under root, and adds the
// completion command, with examples, so that strictUsage covers it too.
func addCompletions(root *cobra.Command) {
	root.InitDefaultCompletionCmd()
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		path := strings.TrimPrefix(c.CommandPath(), root.Name()+" ")
		if fn, ok := completions[path]; ok {
			c.ValidArgsFunction = fn
		}
		if path == "completion" {
			c.Example = "  source <(meshwork completion bash)\n" +
				"  meshwork completion zsh > \"${fpath[1]}/_meshwork\"\n" +
				"  meshwork completion fish > ~/.config/fish/completions/meshwork.fish"
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// completionClient is a client for the agent that cmd's flags name, with
// the completion's short timeout; false when the flags are wrong.
func completionClient(cmd *cobra.Command) (*api.Client, context.Context, context.CancelFunc, bool) {
	fl := cmd.Flags()
	f := &clientFlags{cmd: cmd, format: "text"}
	f.httpAddr, _ = fl.GetString("http-addr")
	f.token, _ = fl.GetString("token")
	f.tokenFile, _ = fl.GetString("token-file")
	if fl.Lookup("http-addr") == nil || f.validate() != nil {
		return nil, nil, nil, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), completionTimeout)
	return f.client().WithTimeout(completionTimeout), ctx, cancel, true
}

// matching keeps the names that start with what was typed.
func matching(names []string, toComplete string) []string {
	out := names[:0:0]
	for _, n := range names {
		if strings.HasPrefix(strings.ToLower(n), strings.ToLower(toComplete)) {
			out = append(out, n)
		}
	}
	return out
}

const noFiles = cobra.ShellCompDirectiveNoFileComp

// completeFirstArg completes a command's first argument with the names
// that list fetches from the agent; nothing for the later arguments, or
// when the agent does not answer.
func completeFirstArg(list func(ctx context.Context, c *api.Client) ([]string, error)) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, noFiles
		}
		return fetchMatching(cmd, toComplete, list)
	}
}

// fetchMatching asks the agent that cmd's flags name for names, and offers
// those that start with what was typed.
func fetchMatching(cmd *cobra.Command, toComplete string, list func(ctx context.Context, c *api.Client) ([]string, error)) ([]string, cobra.ShellCompDirective) {
	c, ctx, cancel, ok := completionClient(cmd)
	if !ok {
		return nil, noFiles
	}
	defer cancel()
	names, err := list(ctx, c)
	if err != nil {
		return nil, noFiles | cobra.ShellCompDirectiveError
	}
	return matching(names, toComplete), noFiles
}

// completeNodes offers the names of the members that keep accepts.
func completeNodes(keep func(api.Member) bool) cobra.CompletionFunc {
	return completeFirstArg(func(ctx context.Context, c *api.Client) ([]string, error) {
		members, err := c.Members(ctx)
		var names []string
		for _, m := range members {
			if keep(m) {
				names = append(names, m.Name)
			}
		}
		return names, err
	})
}

// completeServiceNames offers the names of the catalog's services.
var completeServiceNames = completeFirstArg(func(ctx context.Context, c *api.Client) ([]string, error) {
	sums, _, err := c.CatalogServices(ctx, nil)
	var names []string
	for _, s := range sums {
		names = append(names, s.Name)
	}
	return names, err
})

// completeLocalServiceIDs offers the IDs of the agent's own services, for
// an argument or a flag (--service).
var completeLocalServiceIDs = completeFirstArg(func(ctx context.Context, c *api.Client) ([]string, error) {
	svcs, err := c.AgentServices(ctx)
	var ids []string
	for _, s := range svcs {
		ids = append(ids, s.ID)
	}
	return ids, err
})

// completeACLPolicyNames offers the names of the ACL policies.
var completeACLPolicyNames = completeFirstArg(func(ctx context.Context, c *api.Client) ([]string, error) {
	list, err := c.ACLPolicyList(ctx)
	var names []string
	for _, p := range list {
		names = append(names, p.Name)
	}
	return names, err
})

// completePolicyKindAndName offers the policy kinds for the first argument
// and the names of the documents of that kind for the second.
func completePolicyKindAndName(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
	switch {
	case len(args) == 0:
		kinds := make([]string, len(policy.Kinds))
		for i, k := range policy.Kinds {
			kinds[i] = string(k)
		}
		return matching(kinds, toComplete), noFiles
	case len(args) > 1 || cmd.Name() == "list":
		return nil, noFiles
	}
	kind, err := policy.ParseKind(args[0])
	if err != nil {
		return nil, noFiles
	}
	return fetchMatching(cmd, toComplete, func(ctx context.Context, c *api.Client) ([]string, error) {
		var list raftstore.PolicyList
		_, err := c.Do(ctx, http.MethodGet, "/v1/policy", url.Values{"kind": {string(kind)}}, nil, &list)
		var names []string
		for _, e := range list.Documents {
			names = append(names, e.Name)
		}
		return names, err
	})
}
