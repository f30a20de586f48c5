// manifestcheck decodes rendered Kubernetes manifests (helm template's output, on stdin) into the
// k8s.io/api types with unknown fields disallowed: a misspelt or misplaced field fails here, not
// at kubectl apply. Kinds of CRDs it does not know (ServiceMonitor, PrometheusRule) are listed
// and skipped; tests/integration/test_helm_chart.py checks the PrometheusRule's rules with promtool.
//
//	helm template t deploy/helm/tidings | go run ./deploy/helm/manifestcheck
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

func typed(apiVersion, kind string) any {
	switch apiVersion + "/" + kind {
	case "v1/ConfigMap":
		return &corev1.ConfigMap{}
	case "v1/Secret":
		return &corev1.Secret{}
	case "v1/Service":
		return &corev1.Service{}
	case "apps/v1/StatefulSet":
		return &appsv1.StatefulSet{}
	case "batch/v1/Job":
		return &batchv1.Job{}
	case "policy/v1/PodDisruptionBudget":
		return &policyv1.PodDisruptionBudget{}
	}
	return nil
}

func main() {
	data, err := io.ReadAll(bufio.NewReader(os.Stdin))
	if err != nil {
		panic(err)
	}
	failed := false
	for i, doc := range strings.Split(string(data), "\n---") {
		if strings.TrimSpace(strings.TrimPrefix(doc, "---")) == "" {
			continue
		}
		raw, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil || string(raw) == "null" {
			fmt.Printf("document %d: not YAML: %v\n", i, err)
			failed = failed || err != nil
			continue
		}
		var head struct{ APIVersion, Kind string }
		if err := json.Unmarshal(raw, &head); err != nil || head.Kind == "" {
			fmt.Printf("document %d: no apiVersion/kind\n", i)
			failed = true
			continue
		}
		target := typed(head.APIVersion, head.Kind)
		if target == nil {
			fmt.Printf("skip %s %s (no k8s.io/api type)\n", head.APIVersion, head.Kind)
			continue
		}
		decoder := json.NewDecoder(bytes.NewReader(raw))
		decoder.DisallowUnknownFields()
		if err := decoder.Decode(target); err != nil {
			fmt.Printf("FAIL %s %s: %v\n", head.APIVersion, head.Kind, err)
			failed = true
			continue
		}
		fmt.Printf("ok %s %s\n", head.APIVersion, head.Kind)
	}
	if failed {
		os.Exit(1)
	}
}
