"""Engine speed against its peers, measured side by side in this process.

- One training step (forward, loss, backward, optimizer step, zero grad) against PyTorch CPU on
  three MLPs, float32 on both sides, same architecture, same initial weights (minigrad's, copied
  into torch) and the same batches, MSE summed, plain SGD.
- ``minigrad.fit`` on scikit-learn's digits against ``MLPClassifier`` with the same settings:
  wall time and test accuracy.

Timing: the two sides run in alternating blocks (the order flips every round) so drift on a shared
machine hits both; each side's figure is the median over rounds of its per-step time. PyTorch gets
as many intra-op threads as numpy's BLAS has, so neither side has more cores. Every block starts
after a short pause: both libraries leave their worker threads spinning for a while after a
parallel call (OpenBLAS for about 0.1 s), and a block that starts inside the other side's spin
shares its cores with it -- measured here, that slows PyTorch's first steps after a numpy block
up to fourfold, which would flatter minigrad.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time
import warnings

import numpy as np

import minigrad as mg

# (name, layer sizes, hidden activation, output activation, batch, SGD alpha)
STEP_CASES = [
    ("XOR 2-3-1 tanh/sigmoid, batch 4", [2, 3, 1], "tanh", "sigmoid", 4, 1.0),
    ("MLP 784-128-10 ReLU, batch 64", [784, 128, 10], "relu", None, 64, 1e-4),
    ("MLP 784-512-512-10 ReLU, batch 256", [784, 512, 512, 10], "relu", None, 256, 1e-5),
]
STEP_TARGETS = {"XOR": 0.15, "784-128-10": 0.6, "784-512-512-10": 0.9}
FIT_TARGET = 0.5
DIGITS_SETTINGS = {"hidden": 64, "alpha": 1e-3, "batch": 32, "epochs": 30}


def blas_pool() -> dict:
    """threadpoolctl's description of numpy's BLAS: library, version, kernel architecture, threads."""
    from threadpoolctl import threadpool_info

    pools = [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
    return pools[0] if pools else {"internal_api": "unknown", "num_threads": 1}


SETTLE_SECONDS = 0.15  # longer than OpenBLAS's and libgomp's spin before their threads sleep


def interleaved_times(calls, rounds, per_round, clock=time.perf_counter, warmup=0):
    """Seconds per call of each zero-argument callable, one list per callable with one figure per
    round; the callables run in blocks whose order rotates every round. ``clock`` is wall time, or
    ``time.thread_time`` when all the work runs on this thread (CPU time: the time other processes
    take the core away is not counted). ``warmup`` untimed calls open each block: after the pause,
    a library's worker threads are asleep, and waking them is not the per-call cost being measured
    (PyTorch's first two-thread steps after a pause took up to four times its steady step)."""
    times = [[] for _ in calls]
    for r in range(rounds):
        for k in range(len(calls)):
            side = (r + k) % len(calls)
            call = calls[side]
            time.sleep(SETTLE_SECONDS)
            for _ in range(warmup):
                call()
            started = clock()
            for _ in range(per_round):
                call()
            times[side].append((clock() - started) / per_round)
    return times


# ---------------------------------------------------------------------- training step vs PyTorch
def minigrad_mlp(sizes, hidden, output, rng):
    activations = {"tanh": mg.Tanh, "sigmoid": mg.Sigmoid, "relu": mg.Relu}
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        layers.append(mg.Linear(n_in, n_out, rng=rng, dtype=np.float32))
        last = i == len(sizes) - 2
        name = output if last else hidden
        if name:
            layers.append(activations[name]())
    return mg.Sequential(layers)


def torch_copy(torch, model):
    """The same network in torch, with minigrad's weights (torch stores Linear weights transposed)."""
    activations = {mg.Tanh: torch.nn.Tanh, mg.Sigmoid: torch.nn.Sigmoid, mg.Relu: torch.nn.ReLU}
    layers = []
    for layer in model.layers:
        if isinstance(layer, mg.Linear):
            twin = torch.nn.Linear(layer.in_features, layer.out_features)
            with torch.no_grad():
                twin.weight.copy_(torch.from_numpy(layer.weight.data.T.copy()))
                twin.bias.copy_(torch.from_numpy(layer.bias.data.copy()))
            layers.append(twin)
        else:
            layers.append(activations[type(layer)]())
    return torch.nn.Sequential(*layers)


def make_batches(sizes, batch, rng, count=8):
    inputs = [rng.standard_normal((batch, sizes[0])).astype(np.float32) for _ in range(count)]
    targets = [rng.uniform(0, 1, (batch, sizes[-1])).astype(np.float32) for _ in range(count)]
    return inputs, targets


def minigrad_stepper(model, alpha, inputs, targets):
    # Batches are wrapped once, outside the timed step, exactly as torch_stepper does.
    batches = itertools.cycle([(mg.Tensor(x), mg.Tensor(y)) for x, y in zip(inputs, targets)])
    loss_fn = mg.MSELoss(reduction="sum")
    optimizer = mg.SGD(model.get_parameters(), alpha=alpha)

    def step():
        x, y = next(batches)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()  # step(zero=True) also clears the gradients, as the seed's SGD does
        return loss

    return step


def torch_stepper(torch, model, alpha, inputs, targets):
    batches = itertools.cycle([(torch.from_numpy(x), torch.from_numpy(y)) for x, y in zip(inputs, targets)])
    optimizer = torch.optim.SGD(model.parameters(), lr=alpha)
    mse = torch.nn.functional.mse_loss

    def step():
        x, y = next(batches)
        optimizer.zero_grad()
        loss = mse(model(x), y, reduction="sum")
        loss.backward()
        optimizer.step()
        return loss

    return step


def check_same_training(torch, sizes, hidden, output, batch, alpha):
    """Ten steps from the same weights on the same batches give the same losses (float32 tolerance)."""
    rng = np.random.default_rng(1)
    model = minigrad_mlp(sizes, hidden, output, rng)
    twin = torch_copy(torch, model)
    inputs, targets = make_batches(sizes, batch, rng, count=4)
    mine = minigrad_stepper(model, alpha, inputs, targets)
    theirs = torch_stepper(torch, twin, alpha, inputs, targets)
    worst = 0.0
    for _ in range(10):
        a, b = float(mine().data), float(theirs().item())
        worst = max(worst, abs(a - b) / max(abs(b), 1e-6))
    return worst


def blas_floor(model, batch, torch=None):
    """The matrix products one minigrad step computes, and nothing else, on arrays of the same shapes:
    forward x @ W per layer, backward x.T @ g per layer and g @ W.T for every layer but the first.
    With ``torch``, the same products through ``torch.mm`` (PyTorch's BLAS, MKL in its CPU wheels)."""
    rng = np.random.default_rng(2)
    shapes = [layer.weight.data.shape for layer in model.layers if isinstance(layer, mg.Linear)]
    inputs = [rng.standard_normal((batch, n_in)).astype(np.float32) for n_in, _ in shapes]
    grads = [rng.standard_normal((batch, n_out)).astype(np.float32) for _, n_out in shapes]
    weights = [rng.standard_normal(shape).astype(np.float32) for shape in shapes]
    mm = np.dot
    if torch is not None:
        mm = torch.mm
        inputs, grads, weights = ([torch.from_numpy(x) for x in arrays] for arrays in (inputs, grads, weights))

    def products():
        for i, (a, g, w) in enumerate(zip(inputs, grads, weights)):
            mm(a, w)
            mm(a.T, g)
            if i:
                mm(g, w.T)

    return products


def step_case(torch, name, sizes, hidden, output, batch, alpha, rounds, clock):
    """Seconds per step, one figure per round: minigrad, PyTorch, numpy's matrix products alone (the floor),
    and PyTorch's products alone."""
    rng = np.random.default_rng(0)
    model = minigrad_mlp(sizes, hidden, output, rng)
    twin = torch_copy(torch, model)
    inputs, targets = make_batches(sizes, batch, rng)
    calls = [minigrad_stepper(model, alpha, inputs, targets), torch_stepper(torch, twin, alpha, inputs, targets)]
    calls += [blas_floor(model, batch), blas_floor(model, batch, torch)]
    for _ in range(3):  # warm-up: allocator pools, BLAS buffers, torch's autograd caches
        for call in calls:
            call()
    # Per-round block length: about 30 ms of work per side keeps timer noise negligible (PyTorch's
    # steady step: the fastest of three probes, each after a pause and two untimed steps).
    per_round = max(5, int(0.03 / min(_probe(calls[1]) for _ in range(3))))
    timings = interleaved_times(calls, rounds, per_round, clock, warmup=2)
    final = float(calls[0]().data)
    if not np.isfinite(final):
        raise RuntimeError(f"{name}: minigrad's loss diverged during the benchmark ({final})")
    return timings


def _probe(call, repeats=20) -> float:
    time.sleep(SETTLE_SECONDS)
    call()
    call()
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - started) / repeats


# ---------------------------------------------------------------------- fit vs scikit-learn
def digits_split(seed):
    """A stratified 75/25 split of scikit-learn's digits, pixels scaled to [0, 1]; one per seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    return train_test_split(x, digits.target, test_size=0.25, random_state=seed, stratify=digits.target)


def _clocks():
    return time.perf_counter(), time.process_time()


def _since(started):
    """(wall seconds, CPU seconds of the whole process) since ``_clocks()``."""
    wall, cpu = _clocks()
    return wall - started[0], cpu - started[1]


def fit_minigrad(x_train, y_train, x_test, y_test, seed):
    s = DIGITS_SETTINGS
    rng = np.random.default_rng(seed)
    model = mg.Sequential(
        [
            mg.Linear(x_train.shape[1], s["hidden"], rng=rng, dtype=np.float32),
            mg.Relu(),
            mg.Linear(s["hidden"], 10, rng=rng, dtype=np.float32),
        ]
    )
    optimizer = mg.Adam(model.get_parameters(), alpha=s["alpha"])
    started = _clocks()
    mg.fit(model, x_train, y_train, mg.CrossEntropyLoss(), optimizer, s["epochs"], batch_size=s["batch"], seed=seed)
    seconds = _since(started)
    with mg.no_grad():
        predicted = model(mg.Tensor(x_test)).data.argmax(axis=1)
    return seconds, float((predicted == y_test).mean())


def fit_sklearn(x_train, y_train, x_test, y_test, seed):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    s = DIGITS_SETTINGS
    clf = MLPClassifier(
        hidden_layer_sizes=(s["hidden"],),
        activation="relu",
        solver="adam",
        alpha=0.0,  # no L2 penalty: minigrad's Adam has none
        learning_rate_init=s["alpha"],
        batch_size=s["batch"],
        max_iter=s["epochs"],
        shuffle=True,
        early_stopping=False,
        tol=0.0,
        n_iter_no_change=s["epochs"] + 1,  # with tol=0 this turns the convergence stop off
        random_state=seed,
    )
    started = _clocks()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # reaching max_iter is the point
        clf.fit(x_train, y_train)
    seconds = _since(started)
    return seconds, float(clf.score(x_test, y_test))


def fit_comparison(seeds):
    """(seconds, test accuracy) per seed for each side: same split and seed for both, order alternating."""
    mine, theirs = [], []
    for i, seed in enumerate(seeds):
        x_train, x_test, y_train, y_test = digits_split(seed)
        runs = [(mine, fit_minigrad), (theirs, fit_sklearn)]
        if i % 2:
            runs.reverse()
        for results, fit in runs:
            time.sleep(SETTLE_SECONDS)
            results.append(fit(x_train, y_train, x_test, y_test, seed))
    return mine, theirs


# ---------------------------------------------------------------------- report
def step_table(torch, threads, rounds):
    """The three training-step cases, with ``threads`` BLAS threads on both sides.

    With one thread all the work of either side runs on this thread, so the table reports CPU time,
    which other processes on a busy machine do not inflate; with more, wall time.
    """
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    clock, clock_name = (time.thread_time, "CPU time") if threads == 1 else (time.perf_counter, "wall time")
    print(f"\n{threads} thread(s) (numpy's BLAS via threadpoolctl, torch.set_num_threads({threads})), {clock_name}")
    print(
        f"{'case':36} {'minigrad':>9} {'torch':>9} {'ratio':>6} {'target':>6} {'':6} {'by min':>6} {'floor':>6}"
        f" {'blas':>6}  losses"
    )
    with threadpool_limits(threads, user_api="blas"):
        for name, sizes, hidden, output, batch, alpha in STEP_CASES:
            agreement = check_same_training(torch, sizes, hidden, output, batch, alpha)
            mine, theirs, floor, their_floor = step_case(torch, name, sizes, hidden, output, batch, alpha, rounds,
                                                         clock)
            t_mine, t_torch = statistics.median(mine), statistics.median(theirs)
            target = next(v for k, v in STEP_TARGETS.items() if k in name)
            ratio = t_mine / t_torch
            verdict = "ok" if ratio <= target else "MISSED"
            print(
                f"{name:36} {t_mine * 1e6:7.1f}us {t_torch * 1e6:7.1f}us {ratio:5.2f}x {target:5.2f}x {verdict:6}"
                f" {min(mine) / min(theirs):5.2f}x {min(floor) / min(theirs):5.2f}x"
                f" {min(floor) / min(their_floor):5.2f}x  {agreement:.0e}"
            )
    print(f"(load average {os.getloadavg()[0]:.1f})")


def run(rounds=25, seeds=range(12)):
    import torch

    blas = blas_pool()
    threads = blas["num_threads"]
    print(
        f"numpy {np.__version__} with {blas['internal_api']} {blas.get('version', '')} "
        f"({blas.get('architecture', '?')} kernels, {threads} threads), torch {torch.__version__}; float32 both sides"
    )
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other work slows both sides, not equally)")
    print("training step = forward + MSE(sum) + backward + SGD step + zero grad; median of interleaved blocks")
    print(
        "ratio = median minigrad / median torch (the verdict); by min = fastest round / fastest round, which\n"
        "load from other processes disturbs least; floor = numpy's matrix products of one minigrad step alone\n"
        "(what minigrad cannot go below), fastest round / torch's fastest; blas = numpy's products / the same\n"
        "products through torch.mm (how much slower numpy's BLAS is than PyTorch's); losses = worst relative\n"
        "difference of the two sides' losses over 10 steps from the same weights and batches"
    )
    # The targets are for numpy's own thread count; one thread shows the engines without threading effects.
    for count in sorted({threads, 1}, reverse=True):
        step_table(torch, count, rounds)
    torch.set_num_threads(threads)

    s = DIGITS_SETTINGS
    print(
        f"\nfit on digits (64-{s['hidden']}-10 ReLU, cross-entropy, Adam {s['alpha']:g}, batch {s['batch']}, "
        f"{s['epochs']} epochs) vs sklearn MLPClassifier, {len(seeds)} seeds (each its own 75/25 split), interleaved"
    )
    mine, theirs = fit_comparison(list(seeds))
    # Accuracy on 450 test digits moves in steps of 0.0022, so compare the paired per-seed differences:
    # "not worse" means the mean difference is above minus two standard errors.
    differences = [a - b for (_, a), (_, b) in zip(mine, theirs)]
    mean_difference = statistics.mean(differences)
    standard_error = statistics.stdev(differences) / len(differences) ** 0.5
    accuracy_ok = mean_difference >= -2 * standard_error
    print(f"{'':14} {'wall (median)':>13} {'CPU (median)':>13} {'mean test accuracy':>19} {'min':>6} {'max':>6}")
    medians = {}
    for label, results in (("minigrad.fit", mine), ("MLPClassifier", theirs)):
        wall = statistics.median(t[0] for t, _ in results)
        cpu = statistics.median(t[1] for t, _ in results)
        medians[label] = wall, cpu
        accs = [a for _, a in results]
        print(
            f"{label:14} {wall * 1e3:11.1f}ms {cpu * 1e3:11.1f}ms {statistics.mean(accs):19.4f}"
            f" {min(accs):6.4f} {max(accs):6.4f}"
        )
    print(
        f"accuracy difference (minigrad - sklearn, paired by seed) {mean_difference:+.4f} +- {standard_error:.4f} "
        f"(one standard error): {'not worse (within two standard errors)' if accuracy_ok else 'WORSE'}"
    )
    wall_ratio = medians["minigrad.fit"][0] / medians["MLPClassifier"][0]
    cpu_ratio = medians["minigrad.fit"][1] / medians["MLPClassifier"][1]
    verdict = "ok" if wall_ratio <= FIT_TARGET and accuracy_ok else "MISSED"
    print(f"time ratio {wall_ratio:.2f}x wall, {cpu_ratio:.2f}x CPU (target <= {FIT_TARGET}x wall): {verdict}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
