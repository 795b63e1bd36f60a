"""Camera-LiDAR interaction for 3D detection (DeepInteraction++) on KITTI-format data."""
