// Command podrunner plays the container runtime for the one fake (kwok) Node of the Gateway API
// conformance environment (tests/e2e/gateway-env). For every Pod bound to that Node it:
//
//   - creates a network namespace held by a "pause" process (unshare -n sleep infinity; no
//     `ip netns add`, whose /run/netns mounts can leak to the host through mount propagation),
//   - joins it to the cni0 bridge with a veth pair and an address from the pod range,
//   - for echo-basic images, starts echo-basic inside it with the Pod's environment (literal values
//     and fieldRefs) and its secret/configMap volumes written to disk, stdout and stderr going to a
//     CRI-format log file that a kwok Logs object points at (so `kubectl logs` works),
//   - once the container listens, annotates the Pod with gw.portcullis.io/pod-ip, which is what
//     kwok's gated pod-ready stage waits for before it marks the Pod Running and Ready.
//
// Pods with other images (coredns) only get the address and the annotation. Deleted Pods are torn
// down before new ones are started, and their neighbour entries flushed, since addresses are reused.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

const podIPAnnotation = "gw.portcullis.io/pod-ip"

var logsResource = schema.GroupVersionResource{Group: "kwok.x-k8s.io", Version: "v1alpha1", Resource: "logs"}

type config struct {
	kubeconfig string
	node       string
	dir        string
	echoBasic  string
	bridge     string
	gateway    netip.Addr
	prefixLen  int
	pool       netip.Prefix
	listenWait time.Duration
}

func main() {
	var cfg config
	var gateway, pool string
	flag.StringVar(&cfg.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig")
	flag.StringVar(&cfg.node, "node", "kwok-node-0", "the fake Node whose Pods to run")
	flag.StringVar(&cfg.dir, "dir", "", "state directory (pod logs, volumes)")
	flag.StringVar(&cfg.echoBasic, "echo-basic", "", "path of the echo-basic binary")
	flag.StringVar(&cfg.bridge, "bridge", "cni0", "bridge the pod veths join")
	flag.StringVar(&gateway, "gateway", "10.244.255.1", "the bridge's address, the pods' default route")
	flag.IntVar(&cfg.prefixLen, "prefix-len", 16, "prefix length of the pod addresses")
	flag.StringVar(&pool, "pool", "10.244.1.0/24", "range pod addresses are taken from")
	flag.DurationVar(&cfg.listenWait, "listen-timeout", 20*time.Second, "how long a container may take to listen")
	flag.Parse()
	if cfg.dir == "" || cfg.echoBasic == "" {
		log.Fatal("--dir and --echo-basic are required")
	}
	var err error
	if cfg.gateway, err = netip.ParseAddr(gateway); err != nil {
		log.Fatalf("--gateway: %v", err)
	}
	if cfg.pool, err = netip.ParsePrefix(pool); err != nil {
		log.Fatalf("--pool: %v", err)
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)

	restCfg, err := clientcmd.BuildConfigFromFlags("", cfg.kubeconfig)
	if err != nil {
		log.Fatalf("kubeconfig: %v", err)
	}
	restCfg.QPS, restCfg.Burst = 50, 100
	r := &runner{
		cfg:  cfg,
		kube: kubernetes.NewForConfigOrDie(restCfg),
		dyn:  dynamic.NewForConfigOrDie(restCfg),
		pods: map[types.UID]*pod{},
		used: map[netip.Addr]bool{},
		next: cfg.pool.Addr().Next(),
		kick: make(chan struct{}, 1),
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := r.run(ctx); err != nil {
		log.Fatal(err)
	}
}

type runner struct {
	cfg  config
	kube kubernetes.Interface
	dyn  dynamic.Interface

	store cache.Store
	kick  chan struct{}

	mu   sync.Mutex
	pods map[types.UID]*pod
	used map[netip.Addr]bool
	next netip.Addr
}

// pod is one running (or starting) fake pod.
type pod struct {
	key    string // namespace/name
	ns     string
	name   string
	uid    types.UID
	ip     netip.Addr
	dir    string
	cancel context.CancelFunc
	done   chan struct{} // closed when start has returned

	procMu sync.Mutex
	holder *exec.Cmd
	procs  []*exec.Cmd
}

func (r *runner) run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactoryWithOptions(r.kube, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", r.cfg.node).String()
		}))
	inf := factory.Core().V1().Pods().Informer()
	poke := func(any) { r.poke() }
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    poke,
		UpdateFunc: func(_, o any) { poke(o) },
		DeleteFunc: poke,
	}); err != nil {
		return err
	}
	r.store = inf.GetStore()
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return errors.New("pod informer did not sync")
	}
	log.Printf("watching pods on node %s", r.cfg.node)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		r.reconcile(ctx)
		select {
		case <-ctx.Done():
			log.Printf("stopping: tearing down %d pods", len(r.pods))
			r.teardownAll()
			return nil
		case <-r.kick:
		case <-tick.C:
		}
	}
}

func (r *runner) poke() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// reconcile tears down pods that are gone or being deleted, then starts the new ones.
func (r *runner) reconcile(ctx context.Context) {
	want := map[types.UID]*corev1.Pod{}
	for _, o := range r.store.List() {
		p := o.(*corev1.Pod)
		if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			want[p.UID] = p
		}
	}
	r.mu.Lock()
	var gone []*pod
	for uid, p := range r.pods {
		if want[uid] == nil {
			gone = append(gone, p)
			delete(r.pods, uid)
		}
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range gone {
		wg.Add(1)
		go func() { defer wg.Done(); r.teardown(p) }()
	}
	wg.Wait()

	uids := make([]string, 0, len(want))
	for uid := range want {
		uids = append(uids, string(uid))
	}
	sort.Strings(uids)
	for _, u := range uids {
		kp := want[types.UID(u)]
		r.mu.Lock()
		_, running := r.pods[kp.UID]
		if running {
			r.mu.Unlock()
			continue
		}
		ip, ok := r.allocate()
		if !ok {
			r.mu.Unlock()
			log.Printf("%s/%s: no free address in %s", kp.Namespace, kp.Name, r.cfg.pool)
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		p := &pod{
			key: kp.Namespace + "/" + kp.Name, ns: kp.Namespace, name: kp.Name, uid: kp.UID, ip: ip,
			dir: filepath.Join(r.cfg.dir, kp.Namespace+"."+kp.Name+"."+string(kp.UID)[:8]), cancel: cancel,
			done: make(chan struct{}),
		}
		r.pods[kp.UID] = p
		r.mu.Unlock()
		go func() {
			defer close(p.done)
			if err := r.start(pctx, p, kp.DeepCopy()); err != nil && pctx.Err() == nil {
				log.Printf("%s: start failed: %v", p.key, err)
			}
		}()
	}
}

// allocate hands out the pool's host addresses round-robin, so a just-freed address is reused as
// late as possible (kwok-style immediate reuse met stale neighbour entries). Called with r.mu held.
func (r *runner) allocate() (netip.Addr, bool) {
	first := r.cfg.pool.Addr().Next()
	size := 1<<(32-r.cfg.pool.Bits()) - 2 // no network, no broadcast address
	a := r.next
	for i := 0; i < size; i++ {
		if !r.cfg.pool.Contains(a) || !r.cfg.pool.Contains(a.Next()) {
			a = first
		}
		if !r.used[a] && a != r.cfg.gateway {
			r.used[a] = true
			r.next = a.Next()
			return a, true
		}
		a = a.Next()
	}
	return netip.Addr{}, false
}

func (r *runner) release(ip netip.Addr) {
	r.mu.Lock()
	delete(r.used, ip)
	r.mu.Unlock()
}

// ---------------------------------------------------------------- start

func (r *runner) start(ctx context.Context, p *pod, kp *corev1.Pod) error {
	t0 := time.Now()
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return err
	}
	if err := r.netns(p); err != nil {
		return fmt.Errorf("network: %w", err)
	}
	var ports []int32
	for i, c := range kp.Spec.Containers {
		if !isEcho(c.Image) {
			continue
		}
		vols, err := r.volumes(ctx, p, kp, c)
		if err != nil {
			return err
		}
		env, err := r.env(ctx, kp, c, p.ip, vols)
		if err != nil {
			return err
		}
		logFile := filepath.Join(p.dir, c.Name+".log")
		if err := p.spawn(r.cfg.echoBasic, env, logFile); err != nil {
			return fmt.Errorf("container %s: %w", c.Name, err)
		}
		if err := r.logsObject(ctx, kp, c.Name, logFile); err != nil {
			log.Printf("%s: Logs object: %v", p.key, err)
		}
		for _, cp := range c.Ports {
			if cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP {
				ports = append(ports, cp.ContainerPort)
			}
		}
		if len(c.Ports) == 0 && i == 0 {
			ports = append(ports, 3000)
		}
	}
	if err := r.waitListening(ctx, p, ports); err != nil {
		return err
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{podIPAnnotation: p.ip.String()}}})
	if _, err := r.kube.CoreV1().Pods(p.ns).Patch(ctx, p.name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("annotate: %w", err)
	}
	log.Printf("%s: up at %s in %s (ports %v)", p.key, p.ip, time.Since(t0).Round(time.Millisecond), ports)
	return nil
}

func isEcho(image string) bool {
	name := image
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	if i := strings.IndexAny(name, ":@"); i >= 0 {
		name = name[:i]
	}
	return name == "echo-basic"
}

// netns starts the holder process and joins its namespace to the bridge.
func (r *runner) netns(p *pod) error {
	holder := exec.Command("unshare", "-n", "sleep", "infinity")
	holder.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := holder.Start(); err != nil {
		return err
	}
	p.procMu.Lock()
	p.holder = holder
	p.procMu.Unlock()
	pid := fmt.Sprint(holder.Process.Pid)
	writePid(filepath.Join(p.dir, "netns.pid"), holder.Process.Pid)
	// unshare must have exec'd sleep in the new namespace before we move a veth end into it.
	self, _ := os.Readlink("/proc/self/ns/net")
	for i := 0; ; i++ {
		ns, err := os.Readlink("/proc/" + pid + "/ns/net")
		if err == nil && ns != self {
			if comm, _ := os.ReadFile("/proc/" + pid + "/comm"); strings.TrimSpace(string(comm)) == "sleep" {
				break
			}
		}
		if i > 500 {
			return errors.New("netns holder did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	host := "vh" + strings.ReplaceAll(string(p.uid), "-", "")[:12]
	addr := fmt.Sprintf("%s/%d", p.ip, r.cfg.prefixLen)
	steps := [][]string{
		{"ip", "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pid},
		{"ip", "link", "set", host, "master", r.cfg.bridge, "up"},
		{"nsenter", "-t", pid, "-n", "ip", "link", "set", "lo", "up"},
		{"nsenter", "-t", pid, "-n", "ip", "addr", "add", addr, "dev", "eth0"},
		{"nsenter", "-t", pid, "-n", "ip", "link", "set", "eth0", "up"},
		{"nsenter", "-t", pid, "-n", "ip", "route", "add", "default", "via", r.cfg.gateway.String()},
		{"ip", "neigh", "flush", "to", p.ip.String(), "dev", r.cfg.bridge},
	}
	for _, s := range steps {
		if out, err := exec.Command(s[0], s[1:]...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// volumes writes the secret and configMap volumes container c mounts, waiting for objects that do
// not exist yet (the suite creates some Secrets after the Deployments that mount them). It returns
// mountPath -> directory.
func (r *runner) volumes(ctx context.Context, p *pod, kp *corev1.Pod, c corev1.Container) (map[string]string, error) {
	byName := map[string]corev1.Volume{}
	for _, v := range kp.Spec.Volumes {
		byName[v.Name] = v
	}
	mounts := map[string]string{}
	for _, m := range c.VolumeMounts {
		v, ok := byName[m.Name]
		if !ok || (v.Secret == nil && v.ConfigMap == nil) {
			continue
		}
		dir := filepath.Join(p.dir, "vol", m.Name)
		var data map[string][]byte
		var items []corev1.KeyToPath
		err := retry(ctx, p.key+": volume "+m.Name, func() error {
			var err error
			data, items, err = r.volumeData(ctx, kp.Namespace, v)
			return err
		})
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		files := map[string][]byte{}
		if len(items) == 0 {
			for k, b := range data {
				files[k] = b
			}
		}
		for _, it := range items {
			if b, ok := data[it.Key]; ok {
				files[it.Path] = b
			}
		}
		for path, b := range files {
			f := filepath.Join(dir, path)
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				return nil, err
			}
			if err := os.WriteFile(f, b, 0o644); err != nil {
				return nil, err
			}
		}
		target := dir
		if m.SubPath != "" {
			target = filepath.Join(dir, m.SubPath)
		}
		mounts[m.MountPath] = target
	}
	return mounts, nil
}

func (r *runner) volumeData(ctx context.Context, ns string, v corev1.Volume) (map[string][]byte, []corev1.KeyToPath, error) {
	if s := v.Secret; s != nil {
		obj, err := r.kube.CoreV1().Secrets(ns).Get(ctx, s.SecretName, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) && s.Optional != nil && *s.Optional {
				return nil, nil, nil
			}
			return nil, nil, err
		}
		return obj.Data, s.Items, nil
	}
	cm := v.ConfigMap
	obj, err := r.kube.CoreV1().ConfigMaps(ns).Get(ctx, cm.Name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) && cm.Optional != nil && *cm.Optional {
			return nil, nil, nil
		}
		return nil, nil, err
	}
	data := map[string][]byte{}
	for k, s := range obj.Data {
		data[k] = []byte(s)
	}
	for k, b := range obj.BinaryData {
		data[k] = b
	}
	return data, cm.Items, nil
}

// env is the container's environment: literal values, fieldRefs and secret/configMap keys. Values
// that point under a volume's mountPath are rewritten to where the runner wrote that volume.
func (r *runner) env(ctx context.Context, kp *corev1.Pod, c corev1.Container, ip netip.Addr, mounts map[string]string) ([]string, error) {
	fieldValue := map[string]string{
		"metadata.name":           kp.Name,
		"metadata.namespace":      kp.Namespace,
		"metadata.uid":            string(kp.UID),
		"spec.nodeName":           kp.Spec.NodeName,
		"spec.serviceAccountName": kp.Spec.ServiceAccountName,
		"status.podIP":            ip.String(),
		"status.hostIP":           "",
	}
	var env []string
	for _, e := range c.Env {
		val := e.Value
		if vf := e.ValueFrom; vf != nil {
			switch {
			case vf.FieldRef != nil:
				val = fieldValue[vf.FieldRef.FieldPath]
			case vf.SecretKeyRef != nil:
				ref := vf.SecretKeyRef
				err := retry(ctx, kp.Namespace+"/"+kp.Name+": env "+e.Name, func() error {
					s, err := r.kube.CoreV1().Secrets(kp.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
					if err == nil {
						val = string(s.Data[ref.Key])
					}
					return err
				})
				if err != nil {
					return nil, err
				}
			case vf.ConfigMapKeyRef != nil:
				ref := vf.ConfigMapKeyRef
				err := retry(ctx, kp.Namespace+"/"+kp.Name+": env "+e.Name, func() error {
					cm, err := r.kube.CoreV1().ConfigMaps(kp.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
					if err == nil {
						val = cm.Data[ref.Key]
					}
					return err
				})
				if err != nil {
					return nil, err
				}
			}
		}
		for mp, dir := range mounts {
			if val == mp || strings.HasPrefix(val, strings.TrimSuffix(mp, "/")+"/") {
				val = dir + strings.TrimPrefix(val, mp)
			}
		}
		env = append(env, e.Name+"="+val)
	}
	return env, nil
}

// retry calls f once a second until it succeeds or ctx ends, as a kubelet does for missing volumes.
func retry(ctx context.Context, what string, f func() error) error {
	var last error
	for i := 0; ; i++ {
		err := f()
		if err == nil {
			return nil
		}
		if err.Error() != fmt.Sprint(last) {
			log.Printf("%s: %v (retrying)", what, err)
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// spawn starts bin inside the pod's namespace with env, its output written to logFile in the CRI
// format that kwok's log server (and so `kubectl logs`) reads.
func (p *pod) spawn(bin string, env []string, logFile string) error {
	f, err := os.OpenFile(logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := append([]string{"-t", fmt.Sprint(p.holder.Process.Pid), "-n", "env", "-i"}, env...)
	cmd := exec.Command("nsenter", append(args, bin)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		f.Close()
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		f.Close()
		return err
	}
	if err := cmd.Start(); err != nil {
		f.Close()
		return err
	}
	p.procMu.Lock()
	p.procs = append(p.procs, cmd)
	p.procMu.Unlock()
	writePid(strings.TrimSuffix(logFile, ".log")+".pid", cmd.Process.Pid)
	var mu sync.Mutex
	var wg sync.WaitGroup
	copyLines := func(stream string, rd io.Reader) {
		defer wg.Done()
		sc := bufio.NewScanner(rd)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			mu.Lock()
			fmt.Fprintf(f, "%s %s F %s\n", time.Now().UTC().Format(time.RFC3339Nano), stream, sc.Text())
			mu.Unlock()
		}
	}
	wg.Add(2)
	go copyLines("stdout", stdout)
	go copyLines("stderr", stderr)
	go func() {
		wg.Wait()
		err := cmd.Wait()
		mu.Lock()
		fmt.Fprintf(f, "%s stderr F [podrunner] exited: %v\n", time.Now().UTC().Format(time.RFC3339Nano), err)
		mu.Unlock()
		f.Close()
	}()
	return nil
}

// writePid records a process the runner started, so that gateway-env down can stop it even if the
// runner itself was killed.
func writePid(file string, pid int) {
	if err := os.WriteFile(file, []byte(fmt.Sprintln(pid)), 0o644); err != nil {
		log.Printf("%s: %v", file, err)
	}
}

// logsObject points kwok's kubelet log API at the container's log file.
func (r *runner) logsObject(ctx context.Context, kp *corev1.Pod, container, file string) error {
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kwok.x-k8s.io/v1alpha1",
		"kind":       "Logs",
		"metadata":   map[string]any{"name": kp.Name, "namespace": kp.Namespace},
		"spec": map[string]any{"logs": []any{map[string]any{
			"containers": []any{container}, "logsFile": file, "follow": true,
		}}},
	}}
	res := r.dyn.Resource(logsResource).Namespace(kp.Namespace)
	_, err := res.Create(ctx, obj, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		if err = res.Delete(ctx, kp.Name, metav1.DeleteOptions{}); err == nil || apierrors.IsNotFound(err) {
			_, err = res.Create(ctx, obj, metav1.CreateOptions{})
		}
	}
	return err
}

// waitListening waits until every port accepts connections on the pod's address.
func (r *runner) waitListening(ctx context.Context, p *pod, ports []int32) error {
	deadline := time.Now().Add(r.cfg.listenWait)
	for _, port := range ports {
		addr := net.JoinHostPort(p.ip.String(), fmt.Sprint(port))
		for {
			c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("nothing listens on %s after %s", addr, r.cfg.listenWait)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return nil
}

// ---------------------------------------------------------------- teardown

func (r *runner) teardown(p *pod) {
	p.cancel()
	<-p.done
	p.procMu.Lock()
	procs := append([]*exec.Cmd{}, p.procs...)
	if p.holder != nil {
		procs = append(procs, p.holder)
	}
	p.procMu.Unlock()
	for _, c := range procs {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range procs {
		exited := make(chan struct{})
		go func() {
			for {
				if err := c.Process.Signal(syscall.Signal(0)); err != nil {
					break
				}
				if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Process.Pid)); strings.Contains(string(b), ") Z ") {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			close(exited)
		}()
		select {
		case <-exited:
		case <-time.After(3 * time.Second):
			_ = c.Process.Kill()
		}
	}
	if p.holder != nil {
		_, _ = p.holder.Process.Wait()
	}
	// The veth pair goes with the namespace; the bridge may still remember the old MAC.
	_ = exec.Command("ip", "neigh", "flush", "to", p.ip.String(), "dev", r.cfg.bridge).Run()
	_ = os.RemoveAll(filepath.Join(p.dir, "vol"))
	if pids, _ := filepath.Glob(filepath.Join(p.dir, "*.pid")); len(pids) > 0 {
		for _, f := range pids {
			_ = os.Remove(f)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := r.dyn.Resource(logsResource).Namespace(p.ns).Delete(ctx, p.name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		log.Printf("%s: delete Logs object: %v", p.key, err)
	}
	r.release(p.ip)
	log.Printf("%s: down (%s released)", p.key, p.ip)
}

func (r *runner) teardownAll() {
	r.mu.Lock()
	all := make([]*pod, 0, len(r.pods))
	for uid, p := range r.pods {
		all = append(all, p)
		delete(r.pods, uid)
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range all {
		wg.Add(1)
		go func() { defer wg.Done(); r.teardown(p) }()
	}
	wg.Wait()
}
