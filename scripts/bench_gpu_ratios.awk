# bench_gpu_ratios.awk: pairs scadles-bench_gpu's "result" lines (first file) with the PyTorch peer's
# "torch ..." lines (second file, tests/bench/torch_gpu_peer.py) and prints, for every model/batch and
# Top-k size/ratio both measured, ours / torch (images/s: > 1 means we are faster; Top-k: torch ms /
# our ms, > 1 means we are faster). Used by scripts/bench_gpu.sh and scripts/gpu_check.sh.
#   awk -f scripts/bench_gpu_ratios.awk OURS.txt TORCH.txt
FNR == NR && $1 == "result" && $2 == "model" { ours_img[$3 " " $5] = $7; next }
FNR == NR && $1 == "result" && $2 == "topk"  { ours_tk[$4 " " $6] = $8; next }
FNR == NR { next }
$1 == "torch" && $2 == "model" && (($3 " " $5) in ours_img) {
    printf "  %-8s batch %-4s torch %-5s %9.1f img/s  ours %9.1f img/s  ours/torch %.2f\n",
           $3, $5, $7, $9, ours_img[$3 " " $5], ours_img[$3 " " $5] / $9 }
$1 == "torch" && $2 == "topk" && (($4 " " $6) in ours_tk) {
    printf "  topk n %-9s r %-5s torch %8.3f ms  ours %8.3f ms  speedup %.2f\n",
           $4, $6, $8, ours_tk[$4 " " $6], $8 / ours_tk[$4 " " $6] }
