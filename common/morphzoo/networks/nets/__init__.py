"""Networks: registration backbones (pair -> field) and segmentation nets."""
from morphzoo.networks.nets.voxelmorph import VOXELMORPH_VARIANTS, VoxelMorphBackbone
from morphzoo.networks.nets.ghost_sc_unet import GhostSCBlock, GhostSCUNet
from morphzoo.networks.nets.dense_eca_unet import DenseECAUNet, dense_eca_nodes
