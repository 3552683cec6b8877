// Command k8s-validate checks rendered Kubernetes manifests against the API
// types, without a cluster and without downloading schemas.
//
// It reads multi-document YAML on stdin (what `helm template` prints) and
// decodes every document strictly into the Go type of its apiVersion and
// kind from k8s.io/api: an unknown or misspelt field, a value of the wrong
// type, a malformed quantity or a duplicate key is an error, and so is a
// kind it does not know. On top of the types it checks what the API server
// would refuse at once and a type cannot say: names and labels, port names,
// environment variable names, and a workload selector that matches its pod
// template. ServiceMonitor (prometheus-operator, not a core type) is checked
// loosely: the fields this chart uses, by shape.
//
// Prints one line per object and exits 1 if any document failed.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metavalidation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// known maps "apiVersion kind" to a constructor of its typed object. Only
// served, non-deprecated versions: a chart that renders autoscaling/v1 or
// policy/v1beta1 fails here.
var known = map[string]func() any{
	"v1 ConfigMap":                             func() any { return &corev1.ConfigMap{} },
	"v1 Secret":                                func() any { return &corev1.Secret{} },
	"v1 Service":                               func() any { return &corev1.Service{} },
	"v1 ServiceAccount":                        func() any { return &corev1.ServiceAccount{} },
	"apps/v1 Deployment":                       func() any { return &appsv1.Deployment{} },
	"apps/v1 StatefulSet":                      func() any { return &appsv1.StatefulSet{} },
	"autoscaling/v2 HorizontalPodAutoscaler":   func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"policy/v1 PodDisruptionBudget":            func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1 NetworkPolicy":       func() any { return &networkingv1.NetworkPolicy{} },
	"rbac.authorization.k8s.io/v1 Role":        func() any { return &rbacv1.Role{} },
	"rbac.authorization.k8s.io/v1 RoleBinding": func() any { return &rbacv1.RoleBinding{} },
}

func main() {
	n, errs := validateStream(os.Stdin, os.Stdout)
	for _, err := range errs {
		fmt.Fprintln(os.Stderr, "error:", err)
	}
	if len(errs) > 0 {
		fmt.Fprintf(os.Stderr, "%d of %d objects invalid\n", len(errs), n)
		os.Exit(1)
	}
	if n == 0 {
		fmt.Fprintln(os.Stderr, "error: no objects on stdin")
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "%d objects valid\n", n)
}

// validateStream checks every document of r; it returns how many objects it
// saw and one error per invalid one.
func validateStream(r io.Reader, out io.Writer) (int, []error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var errs []error
	n := 0
	for doc := 1; ; doc++ {
		raw, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d: %w", doc, err))
			break
		}
		if isBlank(raw) {
			continue // helm prints "---" before templates that render nothing
		}
		n++
		name, err := validateDoc(raw)
		if err != nil {
			errs = append(errs, fmt.Errorf("document %d (%s): %w", doc, name, err))
			continue
		}
		fmt.Fprintf(out, "ok %s\n", name)
	}
	return n, errs
}

// isBlank: only comments and white space.
func isBlank(doc []byte) bool {
	for _, line := range bytes.Split(doc, []byte("\n")) {
		t := bytes.TrimSpace(line)
		if len(t) > 0 && t[0] != '#' && !bytes.Equal(t, []byte("---")) {
			return false
		}
	}
	return true
}

func validateDoc(raw []byte) (string, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(raw, &tm); err != nil {
		return "?", fmt.Errorf("not a YAML object: %w", err)
	}
	var meta struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	_ = yaml.Unmarshal(raw, &meta)
	name := fmt.Sprintf("%s/%s", tm.Kind, meta.Metadata.Name)
	if tm.APIVersion == "" || tm.Kind == "" {
		return name, errors.New("apiVersion and kind are required")
	}
	if tm.Kind == "ServiceMonitor" {
		return name, validateServiceMonitor(tm, raw)
	}
	newObj, ok := known[tm.APIVersion+" "+tm.Kind]
	if !ok {
		return name, fmt.Errorf("unknown apiVersion/kind %s %s", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	// UnmarshalStrict: duplicate keys and fields the type does not have are errors.
	if err := yaml.UnmarshalStrict(raw, obj); err != nil {
		return name, fmt.Errorf("does not decode into %T: %w", obj, err)
	}
	if errs := validateObject(obj); len(errs) > 0 {
		return name, errs.ToAggregate()
	}
	return name, nil
}

func validateMeta(m *metav1.ObjectMeta, serviceName bool) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("metadata")
	check := validation.IsDNS1123Subdomain
	if serviceName {
		check = validation.IsDNS1035Label
	}
	if m.Name == "" {
		errs = append(errs, field.Required(p.Child("name"), ""))
	} else {
		for _, msg := range check(m.Name) {
			errs = append(errs, field.Invalid(p.Child("name"), m.Name, msg))
		}
	}
	errs = append(errs, metavalidation.ValidateLabels(m.Labels, p.Child("labels"))...)
	return errs
}

func validateObject(obj any) field.ErrorList {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		errs := validateMeta(&o.ObjectMeta, false)
		return append(errs, validateWorkload(o.Spec.Selector, &o.Spec.Template, field.NewPath("spec"))...)
	case *appsv1.StatefulSet:
		errs := validateMeta(&o.ObjectMeta, false)
		return append(errs, validateWorkload(o.Spec.Selector, &o.Spec.Template, field.NewPath("spec"))...)
	case *corev1.Service:
		return append(validateMeta(&o.ObjectMeta, true), validateService(o)...)
	case *autoscalingv2.HorizontalPodAutoscaler:
		errs := validateMeta(&o.ObjectMeta, false)
		p := field.NewPath("spec")
		ref := o.Spec.ScaleTargetRef
		if ref.Kind == "" || ref.Name == "" {
			errs = append(errs, field.Required(p.Child("scaleTargetRef"), "kind and name"))
		}
		if o.Spec.MaxReplicas < 1 {
			errs = append(errs, field.Invalid(p.Child("maxReplicas"), o.Spec.MaxReplicas, "must be at least 1"))
		}
		if o.Spec.MinReplicas != nil && *o.Spec.MinReplicas > o.Spec.MaxReplicas {
			errs = append(errs, field.Invalid(p.Child("minReplicas"), *o.Spec.MinReplicas, "above maxReplicas"))
		}
		return errs
	case *policyv1.PodDisruptionBudget:
		errs := validateMeta(&o.ObjectMeta, false)
		p := field.NewPath("spec")
		if (o.Spec.MinAvailable == nil) == (o.Spec.MaxUnavailable == nil) {
			errs = append(errs, field.Invalid(p, "", "exactly one of minAvailable and maxUnavailable"))
		}
		if o.Spec.Selector == nil || len(o.Spec.Selector.MatchLabels)+len(o.Spec.Selector.MatchExpressions) == 0 {
			errs = append(errs, field.Required(p.Child("selector"), "an empty selector selects every pod"))
		}
		return errs
	case *corev1.ConfigMap:
		return validateMeta(&o.ObjectMeta, false)
	case *corev1.Secret:
		return validateMeta(&o.ObjectMeta, false)
	case *corev1.ServiceAccount:
		return validateMeta(&o.ObjectMeta, false)
	case *networkingv1.NetworkPolicy:
		return validateMeta(&o.ObjectMeta, false)
	case *rbacv1.Role:
		return validateMeta(&o.ObjectMeta, false)
	case *rbacv1.RoleBinding:
		return validateMeta(&o.ObjectMeta, false)
	}
	return field.ErrorList{field.InternalError(nil, fmt.Errorf("no checks for %T", obj))}
}

// validateWorkload: the selector is required, non-empty and matches the pod
// template's labels (the API server refuses the object otherwise), and the
// pod spec's names are well formed.
func validateWorkload(sel *metav1.LabelSelector, tpl *corev1.PodTemplateSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if sel == nil || len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
		errs = append(errs, field.Required(p.Child("selector"), ""))
	} else if s, err := metav1.LabelSelectorAsSelector(sel); err != nil {
		errs = append(errs, field.Invalid(p.Child("selector"), sel, err.Error()))
	} else if !s.Matches(labels.Set(tpl.Labels)) {
		errs = append(errs, field.Invalid(p.Child("template", "metadata", "labels"), tpl.Labels,
			"`selector` does not match template `labels`"))
	}
	errs = append(errs, metavalidation.ValidateLabels(tpl.Labels, p.Child("template", "metadata", "labels"))...)
	return append(errs, validatePodSpec(&tpl.Spec, p.Child("template", "spec"))...)
}

func validatePodSpec(spec *corev1.PodSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(spec.Containers) == 0 {
		errs = append(errs, field.Required(p.Child("containers"), ""))
	}
	volumes := map[string]bool{}
	for i, v := range spec.Volumes {
		volumes[v.Name] = true
		for _, msg := range validation.IsDNS1123Label(v.Name) {
			errs = append(errs, field.Invalid(p.Child("volumes").Index(i).Child("name"), v.Name, msg))
		}
	}
	for i := range spec.Containers {
		errs = append(errs, validateContainer(&spec.Containers[i], volumes, p.Child("containers").Index(i))...)
	}
	return errs
}

func validateContainer(c *corev1.Container, volumes map[string]bool, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, msg := range validation.IsDNS1123Label(c.Name) {
		errs = append(errs, field.Invalid(p.Child("name"), c.Name, msg))
	}
	if c.Image == "" {
		errs = append(errs, field.Required(p.Child("image"), ""))
	}
	ports := map[string]bool{}
	for i, port := range c.Ports {
		pp := p.Child("ports").Index(i)
		if port.Name != "" {
			for _, msg := range validation.IsValidPortName(port.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
			}
			ports[port.Name] = true
		}
		for _, msg := range validation.IsValidPortNum(int(port.ContainerPort)) {
			errs = append(errs, field.Invalid(pp.Child("containerPort"), port.ContainerPort, msg))
		}
	}
	for i, e := range c.Env {
		for _, msg := range validation.IsEnvVarName(e.Name) {
			errs = append(errs, field.Invalid(p.Child("env").Index(i).Child("name"), e.Name, msg))
		}
		if e.Value != "" && e.ValueFrom != nil {
			errs = append(errs, field.Invalid(p.Child("env").Index(i), e.Name, "value and valueFrom are exclusive"))
		}
	}
	for i, m := range c.VolumeMounts {
		if !volumes[m.Name] {
			errs = append(errs, field.NotFound(p.Child("volumeMounts").Index(i).Child("name"), m.Name))
		}
	}
	if c.Lifecycle != nil {
		for name, h := range map[string]*corev1.LifecycleHandler{"preStop": c.Lifecycle.PreStop, "postStart": c.Lifecycle.PostStart} {
			if h == nil {
				continue
			}
			set := 0
			for _, b := range []bool{h.Exec != nil, h.HTTPGet != nil, h.Sleep != nil, h.TCPSocket != nil} {
				if b {
					set++
				}
			}
			if set != 1 || h.TCPSocket != nil {
				errs = append(errs, field.Invalid(p.Child("lifecycle", name), "", "exactly one of exec, httpGet, sleep"))
			}
			if h.Sleep != nil && h.Sleep.Seconds < 0 {
				errs = append(errs, field.Invalid(p.Child("lifecycle", name, "sleep", "seconds"), h.Sleep.Seconds, "negative"))
			}
		}
	}
	for name, probe := range map[string]*corev1.Probe{"livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe, "startupProbe": c.StartupProbe} {
		if probe != nil && probe.HTTPGet != nil && probe.HTTPGet.Port.Type == 1 && !ports[probe.HTTPGet.Port.StrVal] {
			errs = append(errs, field.NotFound(p.Child(name, "httpGet", "port"), probe.HTTPGet.Port.StrVal))
		}
	}
	return errs
}

func validateService(s *corev1.Service) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("spec")
	if len(s.Spec.Ports) == 0 {
		errs = append(errs, field.Required(p.Child("ports"), ""))
	}
	if len(s.Spec.Selector) == 0 {
		errs = append(errs, field.Required(p.Child("selector"), "a Service of this chart selects its pods"))
	}
	for i, port := range s.Spec.Ports {
		pp := p.Child("ports").Index(i)
		if len(s.Spec.Ports) > 1 && port.Name == "" {
			errs = append(errs, field.Required(pp.Child("name"), "required when a Service has several ports"))
		}
		if port.Name != "" {
			for _, msg := range validation.IsDNS1123Label(port.Name) {
				errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
			}
		}
		switch port.Protocol {
		case "", corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			errs = append(errs, field.NotSupported(pp.Child("protocol"), port.Protocol, []string{"TCP", "UDP", "SCTP"}))
		}
		for _, msg := range validation.IsValidPortNum(int(port.Port)) {
			errs = append(errs, field.Invalid(pp.Child("port"), port.Port, msg))
		}
	}
	switch s.Spec.Type {
	case "", corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
	default:
		errs = append(errs, field.NotSupported(p.Child("type"), s.Spec.Type, []string{"ClusterIP", "NodePort", "LoadBalancer"}))
	}
	return errs
}

// serviceMonitor holds the fields of monitoring.coreos.com/v1 ServiceMonitor
// this chart writes; decoded strictly, so a misspelt field is still caught.
type serviceMonitor struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			MatchNames []string `json:"matchNames,omitempty"`
			Any        bool     `json:"any,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		JobLabel  string `json:"jobLabel,omitempty"`
		Endpoints []struct {
			Port          string `json:"port,omitempty"`
			Path          string `json:"path,omitempty"`
			Interval      string `json:"interval,omitempty"`
			ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
			Scheme        string `json:"scheme,omitempty"`
			HonorLabels   bool   `json:"honorLabels,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

func validateServiceMonitor(tm metav1.TypeMeta, raw []byte) error {
	if tm.APIVersion != "monitoring.coreos.com/v1" {
		return fmt.Errorf("ServiceMonitor must be monitoring.coreos.com/v1, not %s", tm.APIVersion)
	}
	var sm serviceMonitor
	if err := yaml.UnmarshalStrict(raw, &sm); err != nil {
		return fmt.Errorf("ServiceMonitor: %w", err)
	}
	errs := validateMeta(&sm.Metadata, false)
	p := field.NewPath("spec")
	if len(sm.Spec.Selector.MatchLabels)+len(sm.Spec.Selector.MatchExpressions) == 0 {
		errs = append(errs, field.Required(p.Child("selector"), ""))
	}
	if len(sm.Spec.Endpoints) == 0 {
		errs = append(errs, field.Required(p.Child("endpoints"), ""))
	}
	for i, e := range sm.Spec.Endpoints {
		ep := p.Child("endpoints").Index(i)
		if e.Port == "" {
			errs = append(errs, field.Required(ep.Child("port"), "a named Service port"))
		}
		if e.Path != "" && !strings.HasPrefix(e.Path, "/") {
			errs = append(errs, field.Invalid(ep.Child("path"), e.Path, "must start with /"))
		}
	}
	return errs.ToAggregate()
}
