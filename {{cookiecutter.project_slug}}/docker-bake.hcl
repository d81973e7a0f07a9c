{%- set variants = cookiecutter.__variants.split(',') -%}
{%- set matrix = cookiecutter._version_matrix -%}
{%- set compiled = [] -%}
{%- set quick = [] -%}
{%- for v in variants -%}
{%- if matrix[v].mmcv_install == 'compile' %}{% set _ = compiled.append(v) %}{% else %}{% set _ = quick.append(v) %}{% endif -%}
{%- endfor -%}
{%- set gpu_prebuilt = [] -%}
{%- for v in quick %}{% if matrix[v].cuda %}{% set _ = gpu_prebuilt.append(v) %}{% endif %}{% endfor -%}
# Every image variant of this executor, for `docker buildx bake`:
#   docker buildx bake            the default group: the lines with prebuilt wheels, and cpu
#   docker buildx bake compile    the lines that compile heavy extensions (long; opt-in)
#   docker buildx bake all        everything
#   docker buildx bake {{ variants[0] }}       one variant
# Override a variable from the environment, e.g.
#   IMAGE_REPOSITORY=registry.example/me/executor EXECUTOR_VERSION=1.0.0 docker buildx bake
# Behind a TLS-intercepting proxy, hand pip the CA bundle as a build secret:
#   docker buildx bake --set '*.secrets=id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt'
# Tags: <repository>:ymir<YMIR version>-{{ cookiecutter.project_slug }}-<variant>-{{ cookiecutter.__task_letters }}

variable "IMAGE_REPOSITORY" {
  default = "{{ cookiecutter.image_repository }}"
}

variable "YMIR_VERSION" {
  default = "{{ cookiecutter.ymir_version }}"
}

# Written into the image labels; `make bake` passes the package's version.
variable "EXECUTOR_VERSION" {
  default = "dev"
}
{%- if cookiecutter.__framework != 'none' %}

# Where the images' pretrained weights are downloaded from: empty is download.openmmlab.com;
# a mirror serves the same paths (e.g. WEIGHTS_BASE_URL=https://mirror.example/openmmlab).
variable "WEIGHTS_BASE_URL" {
  default = ""
}
{%- if gpu_prebuilt %}

# How the prebuilt lines ({{ gpu_prebuilt|join(', ') }}) get mmcv: "prebuilt", OpenMMLab's wheel (no
# kernels for Hopper or newer GPUs), or "build", compiled for the line's TORCH_CUDA_ARCH_LIST in
# its -devel image, e.g. MMCV_WHEEL=build docker buildx bake {{ gpu_prebuilt[0] }}
variable "MMCV_WHEEL" {
  default = "prebuilt"
}
{%- endif %}
{%- if gpu_prebuilt or compiled %}

# Parallel jobs of an mmcv compile; empty: one per 3 GB of the build machine's memory.
variable "MAX_JOBS" {
  default = ""
}
{%- endif %}
{%- endif %}

group "default" {
  targets = [{% for v in quick %}"{{ v }}"{% if not loop.last %}, {% endif %}{% endfor %}]
}

group "compile" {
  targets = [{% for v in compiled %}"{{ v }}"{% if not loop.last %}, {% endif %}{% endfor %}]
}

group "all" {
  targets = [{% for v in variants %}"{{ v }}"{% if not loop.last %}, {% endif %}{% endfor %}]
}

{% for v in variants %}
{%- set line = matrix[v] %}
# {{ v }}: {% if line.cuda %}CUDA {{ line.cuda }}, {% endif %}PyTorch {{ line.torch }}, Python {{ line.python }}, {{ line.base_image }}
target "{{ v }}" {
  context    = "."
  dockerfile = "docker/{{ v }}.Dockerfile"
  platforms  = ["linux/amd64"]
  tags       = ["${IMAGE_REPOSITORY}:ymir${YMIR_VERSION}-{{ cookiecutter.project_slug }}-{{ v }}-{{ cookiecutter.__task_letters }}"]
  args = {
    EXECUTOR_VERSION = EXECUTOR_VERSION
{%- if cookiecutter.__framework != 'none' %}
    WEIGHTS_BASE_URL = WEIGHTS_BASE_URL
{%- if v in gpu_prebuilt %}
    MMCV_WHEEL       = MMCV_WHEEL
{%- endif %}
{%- if line.cuda %}
    MAX_JOBS         = MAX_JOBS
{%- endif %}
{%- endif %}
  }
}
{% endfor -%}
