// Package monitoring ships what an operator loads into Prometheus and
// Grafana to watch a Meshwork mesh: the alert rules (alerts.yml, with their
// promtool tests in alerts_test.yml) and the dashboards (dashboards/*.json).
// docs/observability-dashboards.md says how to load them and what each alert
// asks of the operator.
//
// The package has no Go code of its own. Its tests are the lint of those
// files: promtool checks and tests the rules and parses every dashboard
// query, and every metric and label the files name must be one a real agent
// registers, or one of the golden signals of the observability contract.
package monitoring
