"""Data: the offline task suite and community formats, as in-memory splits ready for a backbone."""
from .dataset import TaskDataset, TaskInfo, data_config, prepare_images, resolve_preprocess
from .formats import load_fgvc_json, load_torchvision_task, load_vtab_folder
from .registry import format_tasks_table, list_tasks, load_task, print_tasks, register_vtab_folder

__all__ = ["TaskDataset", "TaskInfo", "data_config", "prepare_images", "resolve_preprocess",
           "load_fgvc_json", "load_torchvision_task", "load_vtab_folder", "format_tasks_table",
           "list_tasks", "load_task", "print_tasks", "register_vtab_folder"]
