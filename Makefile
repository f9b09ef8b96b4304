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
KUSTOMIZATIONS := $(sort $(dir $(wildcard config/*/kustomization.yaml)))

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the operator (release)
	$(CARGO) build --release -p redis-operator

.PHONY: test
test: ## Manifest rendering and schema validation, then unit and mocked-API tests (no cluster needed)
	$(MAKE) manifests-check
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
