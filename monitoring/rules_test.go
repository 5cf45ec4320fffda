package monitoring

import (
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const (
	rulesFile     = "alerts.yml"
	rulesTestFile = "alerts_test.yml"
)

// promtool runs Prometheus's promtool with args and returns its output. It
// fails the test when promtool is missing (it comes with the Debian package
// prometheus, which scripts/deps.sh test installs) or exits non-zero.
func promtool(t *testing.T, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool is not installed: these tests need it to check the rules and dashboards (Debian package prometheus; run scripts/deps.sh test)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// ruleFile is the part of a Prometheus rule file these tests read.
type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []rule `yaml:"rules"`
	} `yaml:"groups"`
}

type rule struct {
	Alert       string            `yaml:"alert"`
	Record      string            `yaml:"record"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for"`
	Labels      map[string]string `yaml:"labels"`
	Annotations map[string]string `yaml:"annotations"`
}

// ruleTestFile is the part of a promtool test file these tests read.
type ruleTestFile struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name        string `yaml:"name"`
		InputSeries []struct {
			Series string `yaml:"series"`
		} `yaml:"input_series"`
		AlertRuleTests []struct {
			Alertname string `yaml:"alertname"`
			ExpAlerts []any  `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func alertRules(t *testing.T) []rule {
	t.Helper()
	var f ruleFile
	readYAML(t, rulesFile, &f)
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s holds no rules", rulesFile)
	}
	return rules
}

func TestAlertRulesCheck(t *testing.T) {
	out := promtool(t, "check", "rules", rulesFile)
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool check rules %s:\n%s", rulesFile, out)
	}
}

func TestAlertRulesUnitTests(t *testing.T) {
	out := promtool(t, "test", "rules", rulesTestFile)
	if !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules %s:\n%s", rulesTestFile, out)
	}
}

// TestAlertRulesAreComplete holds every alert to what an on-call engineer
// needs (a for: that rides out a blip, a severity to route on, a summary
// and a description), and to a promtool test that fires it and one that
// keeps it quiet. promtool passes a test of a misspelt alert name that
// expects no alert, so every tested name must be a rule's.
func TestAlertRulesAreComplete(t *testing.T) {
	var tests ruleTestFile
	readYAML(t, rulesTestFile, &tests)
	if !slices.Equal(tests.RuleFiles, []string{rulesFile}) {
		t.Errorf("%s: rule_files %v, want [%s]", rulesTestFile, tests.RuleFiles, rulesFile)
	}
	fires, quiet := map[string]int{}, map[string]int{}
	for _, tc := range tests.Tests {
		for _, at := range tc.AlertRuleTests {
			if len(at.ExpAlerts) > 0 {
				fires[at.Alertname]++
			} else {
				quiet[at.Alertname]++
			}
		}
	}

	names := map[string]bool{}
	for _, r := range alertRules(t) {
		if r.Alert == "" {
			t.Errorf("recording rule %s: this file is for alerts", r.Record)
			continue
		}
		if names[r.Alert] {
			t.Errorf("%s: two rules have this name", r.Alert)
		}
		names[r.Alert] = true
		if !strings.HasPrefix(r.Alert, "Meshwork") {
			t.Errorf("%s: alert names start with Meshwork", r.Alert)
		}
		if r.For == "" {
			t.Errorf("%s: no for:, so one bad evaluation fires it", r.Alert)
		}
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
		}
		for _, a := range []string{"summary", "description"} {
			if strings.TrimSpace(r.Annotations[a]) == "" {
				t.Errorf("%s: no %s annotation", r.Alert, a)
			}
		}
		if fires[r.Alert] == 0 {
			t.Errorf("%s: no test in %s expects it to fire", r.Alert, rulesTestFile)
		}
		if quiet[r.Alert] == 0 {
			t.Errorf("%s: no test in %s expects it to stay quiet", r.Alert, rulesTestFile)
		}
	}
	for name := range fires {
		if !names[name] {
			t.Errorf("%s tests alert %s, which %s does not define", rulesTestFile, name, rulesFile)
		}
	}
	for name := range quiet {
		if !names[name] {
			t.Errorf("%s tests alert %s, which %s does not define", rulesTestFile, name, rulesFile)
		}
	}
}
