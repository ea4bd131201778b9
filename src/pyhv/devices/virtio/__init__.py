"""virtio: one MMIO transport and one virtqueue shared by every paravirtual device."""
