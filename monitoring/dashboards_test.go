package monitoring

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The schema versions of the Grafana releases the dashboards are for:
// Grafana 10.0 writes 38, 10.4 and 11.0 write 39, later releases more. A
// Grafana migrates an older version on load, never a newer one.
const (
	minSchemaVersion = 38
	maxSchemaVersion = 41
)

// datasourceRef is how every panel and query names its data source: the
// dashboard's own variable, so that one import works with any Prometheus.
var datasourceRef = map[string]any{"type": "prometheus", "uid": "${datasource}"}

// externalURL is what a dashboard must not hold: a link out of the Grafana
// it is imported into.
var externalURL = regexp.MustCompile(`(?i)\b(https?|wss?)://`)

// builtinPanels are the panel types that ship in Grafana's core: no plugin
// to install.
var builtinPanels = map[string]bool{"row": true, "stat": true, "timeseries": true, "table": true, "gauge": true, "bargauge": true, "text": true}

// grafanaVariables are Grafana's own, with what the checks put in their
// place to hand promtool a plain PromQL expression.
var grafanaVariables = map[string]string{
	"__rate_interval": "5m",
	"__interval":      "1m",
	"__range":         "1h",
}

type dashboard struct {
	File          string
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

// variable is a template variable; Query is a string or, from Grafana 10
// on, an object holding the string.
type variable struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Query      any            `json:"query"`
	Datasource map[string]any `json:"datasource"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource map[string]any           `json:"datasource"`
	GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource map[string]any `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // of a collapsed row
}

// dashboardQuery is one query of one panel, its variables replaced.
type dashboardQuery struct {
	Where   string // file, panel and refId, for messages
	PanelID int
	Panel   string // its title
	RefID   string
	Expr    string
}

func loadDashboards(t *testing.T) ([]dashboard, map[string]any) {
	t.Helper()
	files, err := filepath.Glob("dashboards/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("dashboards/: %d dashboards, want the mesh overview and the service detail", len(files))
	}
	raws := map[string]any{}
	var ds []dashboard
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		var raw any
		if err := json.Unmarshal(b, &raw); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		d.File = f
		ds = append(ds, d)
		raws[f] = raw
	}
	return ds, raws
}

func allPanels(ps []panel) []panel {
	var out []panel
	for _, p := range ps {
		out = append(out, p)
		out = append(out, allPanels(p.Panels)...)
	}
	return out
}

var variableRef = regexp.MustCompile(`\$\{(\w+)\}|\$(\w+)`)

// queries returns every query of d with its variables replaced: Grafana's
// own by grafanaVariables, the dashboard's by their value in values, or
// "sample". A variable the dashboard does not define is left in place, for
// the checks to refuse.
func (d dashboard) queries(values map[string]string) []dashboardQuery {
	defined := map[string]bool{}
	for _, v := range d.Templating.List {
		defined[v.Name] = true
	}
	var qs []dashboardQuery
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			expr := variableRef.ReplaceAllStringFunc(tg.Expr, func(ref string) string {
				name := strings.Trim(ref, "${}")
				if v, ok := grafanaVariables[name]; ok {
					return v
				}
				if v, ok := values[name]; ok && defined[name] {
					return v
				}
				if defined[name] {
					return "sample"
				}
				return ref
			})
			qs = append(qs, dashboardQuery{
				Where:   fmt.Sprintf("%s: panel %d %q query %s", d.File, p.ID, p.Title, tg.RefID),
				PanelID: p.ID, Panel: p.Title, RefID: tg.RefID, Expr: expr,
			})
		}
	}
	return qs
}

// TestDashboardsAreWellFormed checks what Grafana needs to import each
// dashboard as it is, into any Grafana 10 or 11 with any Prometheus.
func TestDashboardsAreWellFormed(t *testing.T) {
	ds, raws := loadDashboards(t)
	uids := map[string]string{}
	for _, d := range ds {
		t.Run(filepath.Base(d.File), func(t *testing.T) {
			if d.UID == "" || d.Title == "" {
				t.Errorf("uid %q, title %q: both are needed", d.UID, d.Title)
			}
			if other, ok := uids[d.UID]; ok {
				t.Errorf("uid %q is also %s's", d.UID, other)
			}
			uids[d.UID] = d.File
			if d.SchemaVersion < minSchemaVersion || d.SchemaVersion > maxSchemaVersion {
				t.Errorf("schemaVersion %d, want %d..%d (Grafana 10 and 11)", d.SchemaVersion, minSchemaVersion, maxSchemaVersion)
			}
			hasDatasource := false
			for _, v := range d.Templating.List {
				if v.Name == "datasource" {
					hasDatasource = v.Type == "datasource" && v.Query == "prometheus"
					continue
				}
				if v.Type == "query" && !equalRef(v.Datasource) {
					t.Errorf("variable %s: datasource %v, want %v", v.Name, v.Datasource, datasourceRef)
				}
			}
			if !hasDatasource {
				t.Errorf("no variable datasource of type datasource, query prometheus")
			}

			ids := map[int]bool{}
			var boxes []panel
			for _, p := range allPanels(d.Panels) {
				if ids[p.ID] || p.ID == 0 {
					t.Errorf("panel %q: id %d is zero or taken", p.Title, p.ID)
				}
				ids[p.ID] = true
				if !builtinPanels[p.Type] {
					t.Errorf("panel %q: type %q is not one of Grafana's built-in panels", p.Title, p.Type)
				}
				if p.Title == "" {
					t.Errorf("panel %d has no title", p.ID)
				}
				g := p.GridPos
				if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
					t.Errorf("panel %q: gridPos %+v is outside the 24 columns", p.Title, g)
				}
				for _, b := range boxes {
					if g.X < b.GridPos.X+b.GridPos.W && b.GridPos.X < g.X+g.W && g.Y < b.GridPos.Y+b.GridPos.H && b.GridPos.Y < g.Y+g.H {
						t.Errorf("panel %q overlaps panel %q", p.Title, b.Title)
					}
				}
				boxes = append(boxes, p)
				if p.Type == "row" {
					continue
				}
				if !equalRef(p.Datasource) {
					t.Errorf("panel %q: datasource %v, want %v", p.Title, p.Datasource, datasourceRef)
				}
				if len(p.Targets) == 0 {
					t.Errorf("panel %q has no query", p.Title)
				}
				refs := map[string]bool{}
				for _, tg := range p.Targets {
					if tg.RefID == "" || refs[tg.RefID] {
						t.Errorf("panel %q: refId %q is empty or taken", p.Title, tg.RefID)
					}
					refs[tg.RefID] = true
					if !equalRef(tg.Datasource) {
						t.Errorf("panel %q query %s: datasource %v, want %v", p.Title, tg.RefID, tg.Datasource, datasourceRef)
					}
					if strings.TrimSpace(tg.Expr) == "" {
						t.Errorf("panel %q query %s: no expression", p.Title, tg.RefID)
					}
				}
			}

			// Nothing that reaches out of the Grafana the dashboard is
			// imported into: no links, no URLs.
			walkJSON(raws[d.File], "", func(path string, v any) {
				if s, ok := v.(string); ok && externalURL.MatchString(s) {
					t.Errorf("%s: %q: no external links", path, s)
				}
				if strings.HasSuffix(path, ".links") {
					if l, ok := v.([]any); ok && len(l) > 0 {
						t.Errorf("%s: no links", path)
					}
				}
			})
		})
	}
}

func equalRef(v map[string]any) bool {
	return len(v) == len(datasourceRef) && v["type"] == datasourceRef["type"] && v["uid"] == datasourceRef["uid"]
}

func walkJSON(v any, path string, f func(string, any)) {
	f(path, v)
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			walkJSON(e, path+"."+k, f)
		}
	case []any:
		for i, e := range v {
			walkJSON(e, fmt.Sprintf("%s[%d]", path, i), f)
		}
	}
}

// TestDashboardQueriesParse hands every dashboard query to Prometheus's own
// parser: promtool check rules on a rule file that records each one.
func TestDashboardQueriesParse(t *testing.T) {
	ds, _ := loadDashboards(t)
	type recording struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	// The rule names say where each query is: dashboard:FILE:panelID_REFID.
	var rules []recording
	for _, d := range ds {
		base := strings.ReplaceAll(strings.TrimSuffix(filepath.Base(d.File), ".json"), "-", "_")
		for _, q := range d.queries(nil) {
			rules = append(rules, recording{fmt.Sprintf("dashboard:%s:panel%d_%s", base, q.PanelID, q.RefID), q.Expr})
		}
	}
	file := map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": rules}}}
	b, err := yaml.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboards.rules.yml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out := promtool(t, "check", "rules", path)
	if want := fmt.Sprintf("SUCCESS: %d rules found", len(rules)); !strings.Contains(out, want) {
		t.Fatalf("promtool check rules: want %q:\n%s", want, out)
	}
}

// TestDashboardVariablesAreDefined refuses a query that uses a variable the
// dashboard does not define (Grafana would send "$x" to Prometheus).
func TestDashboardVariablesAreDefined(t *testing.T) {
	ds, _ := loadDashboards(t)
	for _, d := range ds {
		for _, q := range d.queries(nil) {
			if m := variableRef.FindString(q.Expr); m != "" {
				t.Errorf("%s: variable %s is not defined", q.Where, m)
			}
		}
	}
}

// TestServiceDashboardCoversTheService pins the brief of the service
// detail: a service variable, and each of its signals in some query.
func TestServiceDashboardCoversTheService(t *testing.T) {
	ds, _ := loadDashboards(t)
	i := slices.IndexFunc(ds, func(d dashboard) bool { return d.UID == "meshwork-service" })
	if i < 0 {
		t.Fatal("no dashboard with uid meshwork-service")
	}
	d := ds[i]
	if !slices.ContainsFunc(d.Templating.List, func(v variable) bool { return v.Name == "service" && v.Type == "query" }) {
		t.Error("no query variable named service")
	}
	var all strings.Builder
	for _, p := range allPanels(d.Panels) {
		for _, tg := range p.Targets {
			all.WriteString(tg.Expr + "\n")
		}
	}
	for _, want := range []string{
		`direction="inbound",destination="$service"`,
		`direction="outbound",source="$service"`,
		"histogram_quantile(0.5,", "histogram_quantile(0.95,", "histogram_quantile(0.99,",
		"meshwork_service_bytes_total", "meshwork_service_active",
		"sum by (code, reason)", "sum by (source)", "sum by (destination)",
	} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("no query has %s", want)
		}
	}
}
